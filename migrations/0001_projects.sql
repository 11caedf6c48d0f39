-- The identity of what is synced: one row per ProjectSync custom resource
-- (key = "namespace/name"), with where its code comes from.
CREATE TABLE projects (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         TEXT NOT NULL,
    provider    TEXT NOT NULL,
    owner       TEXT,
    repo        TEXT,
    url         TEXT,
    branch      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT projects_key_key UNIQUE (key),
    CONSTRAINT projects_key_not_empty CHECK (key <> ''),
    CONSTRAINT projects_provider_check CHECK (provider IN ('github', 'git')),
    CONSTRAINT projects_source_check CHECK (
        (provider = 'github' AND owner IS NOT NULL AND repo IS NOT NULL AND url IS NULL)
        OR (provider = 'git' AND url IS NOT NULL AND owner IS NULL AND repo IS NULL)
    )
);
