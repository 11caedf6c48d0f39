-- The tables that grow with files, `repository_files` and `memory_entries`,
-- become hash-partitioned by project (declarative partitioning, 16
-- partitions each): a project's rows live in one partition, so its queries
-- touch one partition's indexes, VACUUM and retention work per partition,
-- and the same key distributes the tables on Citus (docs/partitioning.md).
--
-- Every primary and unique key now includes `project_id` (Postgres requires
-- the partition key in them; Citus requires the distribution column). The
-- old leading columns stay first, so every query that probed a key by `id`,
-- `file_id` or `introduced_sync_id` keeps an index probe per partition, and
-- queries that name the project are pruned to one partition. Constraint
-- names are kept: the store maps violations by name. The foreign key of a
-- memory entry to its file row includes the project, which also makes an
-- entry that claims another project's file impossible.
--
-- The rows are copied with their ids (identities continue after them), the
-- views and `sync_files` are recreated with the same definitions, and the
-- old tables are dropped, all in this migration's one transaction: a
-- failure leaves today's schema intact. It holds ACCESS EXCLUSIVE locks on
-- both tables while it copies; docs/partitioning.md describes an online
-- path for a large install.

-- 1. Today's tables step aside, with their index and sequence names.
DROP VIEW active_memory_entries;
DROP VIEW active_repository_files;
DROP FUNCTION sync_files(UUID);

ALTER TABLE memory_entries RENAME TO memory_entries_unpartitioned;
ALTER TABLE repository_files RENAME TO repository_files_unpartitioned;
ALTER SEQUENCE memory_entries_id_seq RENAME TO memory_entries_unpartitioned_id_seq;
ALTER SEQUENCE repository_files_id_seq RENAME TO repository_files_unpartitioned_id_seq;
ALTER INDEX repository_files_pkey RENAME TO repository_files_unpartitioned_pkey;
ALTER INDEX repository_files_sync_path_key RENAME TO repository_files_unpartitioned_sync_path_key;
ALTER INDEX repository_files_project_path_idx RENAME TO repository_files_unpartitioned_project_path_idx;
ALTER INDEX repository_files_project_blob_idx RENAME TO repository_files_unpartitioned_project_blob_idx;
ALTER INDEX memory_entries_pkey RENAME TO memory_entries_unpartitioned_pkey;
ALTER INDEX memory_entries_file_chunk_key RENAME TO memory_entries_unpartitioned_file_chunk_key;
ALTER INDEX memory_entries_project_idx RENAME TO memory_entries_unpartitioned_project_idx;
ALTER INDEX memory_entries_project_embedding_reuse_idx
    RENAME TO memory_entries_unpartitioned_project_embedding_reuse_idx;
ALTER INDEX memory_entries_embedding_reuse_idx RENAME TO memory_entries_unpartitioned_embedding_reuse_idx;

-- 2. The partitioned tables, column for column as before (see 0003, 0004,
-- 0007). `superseded_sync_id` is still in no index, so superseding stays a
-- HOT update into the space each partition's fillfactor keeps free.
CREATE TABLE repository_files (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY,
    project_id          BIGINT NOT NULL,
    path                TEXT NOT NULL,
    blob_sha            TEXT NOT NULL,
    size                BIGINT NOT NULL,
    mode                INTEGER NOT NULL,
    kind                TEXT NOT NULL,
    introduced_sync_id  UUID NOT NULL,
    superseded_sync_id  UUID,
    CONSTRAINT repository_files_path_not_empty CHECK (path <> ''),
    CONSTRAINT repository_files_size_check CHECK (size >= 0),
    CONSTRAINT repository_files_kind_check CHECK (kind IN ('file', 'symlink', 'submodule', 'lfs')),
    CONSTRAINT repository_files_not_self_superseded CHECK (superseded_sync_id <> introduced_sync_id)
) PARTITION BY HASH (project_id);

CREATE TABLE memory_entries (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY,
    project_id          BIGINT NOT NULL,
    file_id             BIGINT NOT NULL,
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
    embedding_endpoint  TEXT,
    CONSTRAINT memory_entries_chunk_index_check CHECK (chunk_index >= 0),
    CONSTRAINT memory_entries_lines_check CHECK (start_line >= 1 AND end_line >= start_line),
    CONSTRAINT memory_entries_content_hash_check CHECK (octet_length(content_hash) = 64),
    CONSTRAINT memory_entries_embedding_check CHECK (
        (embedding IS NULL) = (embedding_model IS NULL)
        AND (embedding IS NULL OR array_ndims(embedding) = 1)
    ),
    CONSTRAINT memory_entries_embedding_endpoint_check
        CHECK (embedding_endpoint IS NULL OR octet_length(embedding_endpoint) = 64)
) PARTITION BY HASH (project_id);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE repository_files_p%s PARTITION OF repository_files
                 FOR VALUES WITH (MODULUS 16, REMAINDER %s) WITH (fillfactor = 85)',
            lpad(i::text, 2, '0'), i);
        EXECUTE format(
            'CREATE TABLE memory_entries_p%s PARTITION OF memory_entries
                 FOR VALUES WITH (MODULUS 16, REMAINDER %s) WITH (fillfactor = 70)',
            lpad(i::text, 2, '0'), i);
    END LOOP;
END
$$;

-- 3. Every row, with its id; new rows continue after the largest. Keys,
-- indexes and foreign keys come after the copy: built and checked once in
-- bulk, not row by row.
INSERT INTO repository_files (id, project_id, path, blob_sha, size, mode, kind,
                              introduced_sync_id, superseded_sync_id)
OVERRIDING SYSTEM VALUE
SELECT id, project_id, path, blob_sha, size, mode, kind, introduced_sync_id, superseded_sync_id
  FROM repository_files_unpartitioned;

INSERT INTO memory_entries (id, project_id, file_id, path, chunk_index, start_line, end_line,
                            language, content, content_hash, embedding, embedding_model,
                            introduced_sync_id, superseded_sync_id, embedding_endpoint)
OVERRIDING SYSTEM VALUE
SELECT id, project_id, file_id, path, chunk_index, start_line, end_line,
       language, content, content_hash, embedding, embedding_model,
       introduced_sync_id, superseded_sync_id, embedding_endpoint
  FROM memory_entries_unpartitioned;

SELECT setval(pg_get_serial_sequence('repository_files', 'id'),
              GREATEST((SELECT max(id) FROM repository_files_unpartitioned),
                       (SELECT last_value FROM repository_files_unpartitioned_id_seq)));
SELECT setval(pg_get_serial_sequence('memory_entries', 'id'),
              GREATEST((SELECT max(id) FROM memory_entries_unpartitioned),
                       (SELECT last_value FROM memory_entries_unpartitioned_id_seq)));

-- 4. The keys. Each partition names its copies `<key>_pNN` before the key
-- is added to the parent (which adopts them): a violation reports the
-- partition's name, which the store maps back to the key's by that suffix.
-- A partition added later must name its keys the same way.
DO $$
DECLARE
    n TEXT;
BEGIN
    FOR i IN 0..15 LOOP
        n := lpad(i::text, 2, '0');
        EXECUTE format(
            'ALTER TABLE repository_files_p%1$s
                 ADD CONSTRAINT repository_files_pkey_p%1$s PRIMARY KEY (id, project_id),
                 ADD CONSTRAINT repository_files_sync_path_key_p%1$s
                     UNIQUE (introduced_sync_id, path, project_id)',
            n);
        EXECUTE format(
            'ALTER TABLE memory_entries_p%1$s
                 ADD CONSTRAINT memory_entries_pkey_p%1$s PRIMARY KEY (id, project_id),
                 ADD CONSTRAINT memory_entries_file_chunk_key_p%1$s
                     UNIQUE (file_id, chunk_index, project_id)',
            n);
    END LOOP;
END
$$;

ALTER TABLE repository_files
    ADD CONSTRAINT repository_files_pkey PRIMARY KEY (id, project_id),
    ADD CONSTRAINT repository_files_sync_path_key UNIQUE (introduced_sync_id, path, project_id),
    ADD CONSTRAINT repository_files_project_id_fkey
        FOREIGN KEY (project_id) REFERENCES projects (id),
    ADD CONSTRAINT repository_files_introduced_sync_id_fkey
        FOREIGN KEY (introduced_sync_id) REFERENCES project_syncs (id);
ALTER TABLE memory_entries
    ADD CONSTRAINT memory_entries_pkey PRIMARY KEY (id, project_id),
    ADD CONSTRAINT memory_entries_file_chunk_key UNIQUE (file_id, chunk_index, project_id),
    ADD CONSTRAINT memory_entries_file_id_fkey FOREIGN KEY (project_id, file_id)
        REFERENCES repository_files (project_id, id) ON DELETE CASCADE;

-- The secondary indexes of 0003, 0006 and 0007, on every partition.
CREATE INDEX repository_files_project_path_idx ON repository_files (project_id, path);
CREATE INDEX repository_files_project_blob_idx ON repository_files (project_id, blob_sha);
CREATE INDEX memory_entries_project_idx ON memory_entries (project_id);
CREATE INDEX memory_entries_project_embedding_reuse_idx
    ON memory_entries (project_id, embedding_model, embedding_endpoint, content_hash)
    WHERE embedding IS NOT NULL AND embedding_endpoint IS NOT NULL;
CREATE INDEX memory_entries_embedding_reuse_idx
    ON memory_entries (embedding_model, embedding_endpoint, content_hash)
    WHERE embedding IS NOT NULL AND embedding_endpoint IS NOT NULL;

DROP TABLE memory_entries_unpartitioned;
DROP TABLE repository_files_unpartitioned;

-- 5. The views and the function of 0005, unchanged: the contract readers use.
CREATE VIEW active_repository_files AS
SELECT p.key                AS project,
       f.path,
       f.blob_sha,
       f.size,
       f.mode,
       f.kind,
       f.id,
       f.project_id,
       f.introduced_sync_id
FROM repository_files f
JOIN projects p ON p.id = f.project_id
JOIN project_syncs s ON s.id = f.introduced_sync_id
WHERE s.status = 'COMPLETED'
  AND f.superseded_sync_id IS NULL;

CREATE VIEW active_memory_entries AS
SELECT p.key                AS project,
       m.path,
       m.content,
       m.chunk_index,
       m.start_line,
       m.end_line,
       m.language,
       m.content_hash,
       m.embedding,
       m.embedding_model,
       m.id,
       m.file_id,
       m.project_id,
       m.introduced_sync_id
FROM memory_entries m
JOIN projects p ON p.id = m.project_id
JOIN project_syncs s ON s.id = m.introduced_sync_id
WHERE s.status = 'COMPLETED'
  AND m.superseded_sync_id IS NULL;

CREATE FUNCTION sync_files(target UUID) RETURNS SETOF repository_files
LANGUAGE sql STABLE AS $$
    SELECT f.*
      FROM project_syncs t
      JOIN repository_files f ON f.project_id = t.project_id
      JOIN project_syncs i ON i.id = f.introduced_sync_id
      LEFT JOIN project_syncs x ON x.id = f.superseded_sync_id
     WHERE t.id = target
       AND t.status = 'COMPLETED'
       AND i.status = 'COMPLETED'
       AND i.chain_seq <= t.chain_seq
       AND (x.id IS NULL OR x.chain_seq > t.chain_seq)
$$;

ANALYZE repository_files;
ANALYZE memory_entries;
