-- One row per *version* of a file: a run writes rows only for the paths it
-- added or modified (unchanged files stay as rows introduced by an older run).
-- The completing transaction of a later run sets `superseded_sync_id` on the
-- rows it replaced or deleted; nothing is updated in place otherwise.
--
-- `superseded_sync_id` has no index and no foreign key, on purpose: it is
-- written only by the completing transaction of that run (same project), and
-- leaving it out of every index lets superseding be a HOT update (no index
-- writes) into the free space the fillfactor keeps on each page. That keeps
-- a small sync's completion cheap on a large repository.
CREATE TABLE repository_files (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id          BIGINT NOT NULL REFERENCES projects (id),
    path                TEXT NOT NULL,
    blob_sha            TEXT NOT NULL,
    size                BIGINT NOT NULL,
    mode                INTEGER NOT NULL,
    kind                TEXT NOT NULL,
    introduced_sync_id  UUID NOT NULL REFERENCES project_syncs (id),
    superseded_sync_id  UUID,
    CONSTRAINT repository_files_sync_path_key UNIQUE (introduced_sync_id, path),
    CONSTRAINT repository_files_path_not_empty CHECK (path <> ''),
    CONSTRAINT repository_files_size_check CHECK (size >= 0),
    CONSTRAINT repository_files_kind_check CHECK (kind IN ('file', 'symlink', 'submodule', 'lfs')),
    CONSTRAINT repository_files_not_self_superseded CHECK (superseded_sync_id <> introduced_sync_id)
) WITH (fillfactor = 85);

-- current version of a path, all versions of a project (FK checks, deletes)
CREATE INDEX repository_files_project_path_idx ON repository_files (project_id, path);
