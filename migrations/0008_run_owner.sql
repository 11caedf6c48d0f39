-- Which install (or `projectsync sync --once` process) started a run: the
-- recovery of abandoned runs fails only the runs of the install that
-- recovers, never those of another install sharing the database. A plain
-- string (an install id, later a shard id). Runs recorded before this column
-- existed keep it NULL; every install treats those as its own.
ALTER TABLE project_syncs ADD COLUMN owner TEXT;

ALTER TABLE project_syncs ADD CONSTRAINT project_syncs_owner_not_empty
    CHECK (owner IS NULL OR owner <> '');

-- the abandoned-run sweep of one install
CREATE INDEX project_syncs_owner_running_idx ON project_syncs (owner)
    WHERE status IN ('PENDING', 'IN_PROGRESS');
