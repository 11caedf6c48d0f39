-- One row per sync run. Completed runs form a linear chain per project:
-- `previous_sync_id` (UNIQUE) points at the completed run this one replaced and
-- is set only by the transaction that completes the run, so failed or
-- abandoned runs keep it NULL and never block the next run. `chain_seq`
-- numbers the completed runs 1, 2, 3... (UNIQUE per project, which also stops
-- two concurrent *first* syncs from both completing).
CREATE TABLE project_syncs (
    id                      UUID PRIMARY KEY,
    project_id              BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    branch                  TEXT NOT NULL,
    commit_sha              TEXT,
    status                  TEXT NOT NULL,
    stage                   TEXT,
    trigger                 TEXT NOT NULL,
    -- the completed run this run diffs against (NOT unique: racing runs share it)
    base_sync_id            UUID REFERENCES project_syncs (id),
    previous_sync_id        UUID REFERENCES project_syncs (id),
    chain_seq               INTEGER,
    restored_from_sync_id   UUID REFERENCES project_syncs (id),
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at             TIMESTAMPTZ,
    error_message           TEXT,
    failed_stage            TEXT,
    -- set once retention deleted rows this run's snapshot needs
    content_pruned_at       TIMESTAMPTZ,
    -- file counts (computed by the store when the run completes)
    files_added             INTEGER NOT NULL DEFAULT 0,
    files_modified          INTEGER NOT NULL DEFAULT 0,
    files_deleted           INTEGER NOT NULL DEFAULT 0,
    files_unchanged         INTEGER NOT NULL DEFAULT 0,
    files_total             INTEGER NOT NULL DEFAULT 0,
    -- counters maintained while recording
    files_recorded          INTEGER NOT NULL DEFAULT 0,
    memory_entries_written  INTEGER NOT NULL DEFAULT 0,
    -- metrics reported by the pipeline
    files_skipped           INTEGER NOT NULL DEFAULT 0,
    bytes_fetched           BIGINT NOT NULL DEFAULT 0,
    api_calls               INTEGER NOT NULL DEFAULT 0,
    prepare_ms              BIGINT,
    scan_ms                 BIGINT,
    import_ms               BIGINT,
    finalize_ms             BIGINT,
    CONSTRAINT project_syncs_status_check
        CHECK (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED')),
    CONSTRAINT project_syncs_stage_check
        CHECK (stage IN ('prepare', 'scan', 'import', 'finalize')),
    CONSTRAINT project_syncs_failed_stage_check
        CHECK (failed_stage IN ('prepare', 'scan', 'import', 'finalize')),
    CONSTRAINT project_syncs_previous_sync_id_key UNIQUE (previous_sync_id),
    CONSTRAINT project_syncs_chain_seq_key UNIQUE (project_id, chain_seq),
    CONSTRAINT project_syncs_chain_only_completed CHECK (
        status = 'COMPLETED'
        OR (previous_sync_id IS NULL AND chain_seq IS NULL)
    ),
    CONSTRAINT project_syncs_completed_shape CHECK (
        status <> 'COMPLETED'
        OR (chain_seq IS NOT NULL AND commit_sha IS NOT NULL
            AND (chain_seq = 1) = (previous_sync_id IS NULL))
    ),
    CONSTRAINT project_syncs_finished_shape CHECK (
        (status IN ('COMPLETED', 'FAILED')) = (finished_at IS NOT NULL)
    ),
    CONSTRAINT project_syncs_not_own_previous CHECK (previous_sync_id <> id)
);

-- history (newest first) and the abandoned-run sweep
CREATE INDEX project_syncs_project_started_idx ON project_syncs (project_id, started_at DESC);
CREATE INDEX project_syncs_running_idx ON project_syncs (project_id)
    WHERE status IN ('PENDING', 'IN_PROGRESS');
