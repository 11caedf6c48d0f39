-- Chunks of one file version, with an optional embedding. Entries follow
-- their file row: introduced by the same run, superseded by the same run.
-- `project_id`, `path`, `introduced_sync_id` and `superseded_sync_id` are
-- copies of the file row's, written only from it (INSERT ... SELECT joins
-- the file row; superseding updates both together). They carry no foreign
-- keys of their own: `file_id` is the integrity anchor, and per-row checks
-- on three more keys would dominate the cost of bulk recording. As for file
-- rows, `superseded_sync_id` is in no index so superseding is a HOT update
-- into the space the fillfactor keeps free (a file's chunks share a page).
CREATE TABLE memory_entries (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id          BIGINT NOT NULL,
    file_id             BIGINT NOT NULL REFERENCES repository_files (id) ON DELETE CASCADE,
    path                TEXT NOT NULL,
    chunk_index         INTEGER NOT NULL,
    start_line          INTEGER NOT NULL,
    end_line            INTEGER NOT NULL,
    language            TEXT,
    content             TEXT NOT NULL,
    content_hash        TEXT NOT NULL,
    embedding           REAL[],
    embedding_model     TEXT,
    introduced_sync_id  UUID NOT NULL,
    superseded_sync_id  UUID,
    CONSTRAINT memory_entries_file_chunk_key UNIQUE (file_id, chunk_index),
    CONSTRAINT memory_entries_chunk_index_check CHECK (chunk_index >= 0),
    CONSTRAINT memory_entries_lines_check CHECK (start_line >= 1 AND end_line >= start_line),
    CONSTRAINT memory_entries_content_hash_check CHECK (octet_length(content_hash) = 64),
    CONSTRAINT memory_entries_embedding_check CHECK (
        (embedding IS NULL) = (embedding_model IS NULL)
        AND (embedding IS NULL OR array_ndims(embedding) = 1)
    )
) WITH (fillfactor = 70);

-- a project's entries (search, deletion)
CREATE INDEX memory_entries_project_idx ON memory_entries (project_id);
-- reuse of an existing embedding for the same content and model
CREATE INDEX memory_entries_embedding_reuse_idx ON memory_entries (embedding_model, content_hash)
    WHERE embedding IS NOT NULL;
