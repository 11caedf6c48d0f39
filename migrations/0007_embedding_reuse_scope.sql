-- Embedding reuse is keyed by who computed a vector, not only by its model
-- name: `embedding_endpoint` is the fingerprint (sha256 hex of the
-- normalised base URL) of the endpoint that answered. Rows written before
-- this column existed keep it NULL and are never reused.
ALTER TABLE memory_entries ADD COLUMN embedding_endpoint TEXT;

ALTER TABLE memory_entries ADD CONSTRAINT memory_entries_embedding_endpoint_check
    CHECK (embedding_endpoint IS NULL OR octet_length(embedding_endpoint) = 64);

-- The old key (model, content hash) no longer matches any lookup.
DROP INDEX IF EXISTS memory_entries_embedding_reuse_idx;

-- reuse within one project (the default scope)
CREATE INDEX memory_entries_project_embedding_reuse_idx
    ON memory_entries (project_id, embedding_model, embedding_endpoint, content_hash)
    WHERE embedding IS NOT NULL AND embedding_endpoint IS NOT NULL;

-- reuse across projects (the Namespace and Cluster scopes)
CREATE INDEX memory_entries_embedding_reuse_idx
    ON memory_entries (embedding_model, embedding_endpoint, content_hash)
    WHERE embedding IS NOT NULL AND embedding_endpoint IS NOT NULL;
