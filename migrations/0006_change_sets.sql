-- What a run fetched and how it scanned. A git source counts the objects and
-- bytes its fetches added to the cache (NULL for sources without one). The
-- scan either applied the source's change set between the base commit and
-- the new one ('ChangeSet') or compared the whole tree with the base picture
-- ('FullDiff'); `scan_reason` says why a run compared whole trees.
ALTER TABLE project_syncs
    ADD COLUMN git_objects_fetched BIGINT,
    ADD COLUMN git_bytes_fetched   BIGINT,
    ADD COLUMN scan_route          TEXT,
    ADD COLUMN scan_reason         TEXT,
    ADD CONSTRAINT project_syncs_scan_route_check
        CHECK (scan_route IN ('ChangeSet', 'FullDiff'));

-- Reuse of existing versions by content: a change-set scan looks up the
-- blobs of its changed paths among the project's rows. `superseded_sync_id`
-- stays out of this index too (see 0003), so superseding remains a HOT
-- update; the active view's conditions are checked on the few rows found.
CREATE INDEX repository_files_project_blob_idx ON repository_files (project_id, blob_sha);
