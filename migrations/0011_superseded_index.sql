-- Retention deletes the rows that runs past the history limit superseded.
-- Without an index on `superseded_sync_id` it found them by visiting every
-- row of the project on every completed run (the benchmark measured two
-- rows read per file for a one-file change), so a run's cost followed the
-- repository, not the change. A partial index holds only superseded rows:
-- current rows stay out of it, and the update that supersedes a row adds
-- one entry, a cost that follows the change like the rest of the run.
CREATE INDEX repository_files_superseded
    ON repository_files (project_id, superseded_sync_id)
    WHERE superseded_sync_id IS NOT NULL;
