-- What the latest completed sync of each project considers current: rows
-- introduced by a COMPLETED run and not superseded since. Rows of running,
-- failed or abandoned runs never appear, and a run's rows appear together
-- with the superseding of the rows they replace (one transaction).
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

-- The picture of any completed run: the file versions introduced by it or an
-- earlier completed run of the chain and not superseded by it or an earlier
-- one. Empty for a run that is not COMPLETED. Complete only while the run is
-- not marked `content_pruned_at` (retention deletes older versions).
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
