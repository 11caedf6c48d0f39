-- What a project's source learned of its repository, kept across operator
-- restarts so that the first poll after one costs what any poll costs: the
-- branch head with the validator GitHub returned for it (a conditional
-- request on an unchanged branch is a 304 that costs no rate limit), and
-- whether the last tree read had to be walked (a truncated listing is not
-- asked for again). Only ever a cost saving: lost or stale values mean one
-- full answer, never a wrong sync. Cleared when the source or branch
-- changes.
ALTER TABLE projects
    ADD COLUMN head_sha    TEXT,
    ADD COLUMN head_etag   TEXT,
    ADD COLUMN tree_walked BOOLEAN NOT NULL DEFAULT false;
