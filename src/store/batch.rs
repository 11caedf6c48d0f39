//! Batching for the bulk writes: splitting inputs into bounded statements and
//! laying them out as the column arrays that `UNNEST` reads. Pure: no I/O.

use std::collections::HashSet;

use super::model::{Embedding, NewFile, NewMemoryEntry};

/// File rows per `INSERT ... SELECT FROM UNNEST(...)` statement.
pub(crate) const FILE_BATCH_ROWS: usize = 5_000;
/// Memory entries per statement, and the content bytes that close a batch
/// early (chunks vary a lot in size; this keeps one statement's message in
/// the low megabytes).
pub(crate) const MEMORY_BATCH_ROWS: usize = 2_000;
pub(crate) const MEMORY_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Ids or hashes per `= ANY($1)` lookup, and rows per retention delete.
pub(crate) const LOOKUP_BATCH: usize = 5_000;
pub(crate) const DELETE_BATCH_ROWS: i64 = 10_000;

/// Splits `items` into consecutive batches of at most `max_rows` items and at
/// most `max_bytes` (as measured by `weight`), except that a single item
/// heavier than `max_bytes` forms its own batch.
pub(crate) fn split_batches<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    weight: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        let rows = i - start;
        if rows > 0 && (rows == max_rows || bytes + w > max_bytes) {
            batches.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += w;
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

/// The first path that occurs twice in `paths`.
pub(crate) fn first_duplicate<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = HashSet::new();
    paths.into_iter().find(|path| !seen.insert(*path))
}

/// Column arrays of a batch of file rows.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FileColumns<'a> {
    pub paths: Vec<&'a str>,
    pub blob_shas: Vec<&'a str>,
    pub sizes: Vec<i64>,
    pub modes: Vec<i32>,
    pub kinds: Vec<&'static str>,
}

/// Lays out file rows as columns; `Err` names the first value Postgres
/// cannot hold.
pub(crate) fn build_file_columns(files: &[NewFile]) -> Result<FileColumns<'_>, String> {
    let mut columns = FileColumns::default();
    for file in files {
        if file.path.is_empty() {
            return Err("a file has an empty path".to_string());
        }
        let size = i64::try_from(file.size)
            .map_err(|_| format!("size {} of {:?} is too large", file.size, file.path))?;
        let mode = i32::try_from(file.mode)
            .map_err(|_| format!("mode {:o} of {:?} is not a git mode", file.mode, file.path))?;
        columns.paths.push(&file.path);
        columns.blob_shas.push(&file.blob_sha);
        columns.sizes.push(size);
        columns.modes.push(mode);
        columns.kinds.push(file.kind.as_str());
    }
    Ok(columns)
}

/// Column arrays of a batch of memory entries. Embeddings travel as one flat
/// `REAL[]` plus an offset and a length per row (`UNNEST` would flatten a
/// two-dimensional array, and rows may lack an embedding).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct MemoryColumns<'a> {
    pub file_ids: Vec<i64>,
    pub chunk_indexes: Vec<i32>,
    pub start_lines: Vec<i32>,
    pub end_lines: Vec<i32>,
    pub languages: Vec<Option<&'a str>>,
    pub contents: Vec<&'a str>,
    pub content_hashes: Vec<&'a str>,
    pub models: Vec<Option<&'a str>>,
    pub endpoints: Vec<Option<&'a str>>,
    pub embedding_offsets: Vec<Option<i32>>,
    pub embedding_lengths: Vec<Option<i32>>,
    pub embeddings_flat: Vec<f32>,
}

/// Lays out memory entries as columns; `Err` says which entry is invalid.
pub(crate) fn build_memory_columns(
    entries: &[NewMemoryEntry],
) -> Result<MemoryColumns<'_>, String> {
    let mut c = MemoryColumns::default();
    for entry in entries {
        let what = || format!("chunk {} of file {}", entry.chunk_index, entry.file);
        let chunk_index = i32::try_from(entry.chunk_index)
            .map_err(|_| format!("{}: chunk index too large", what()))?;
        if entry.start_line < 1 || entry.end_line < entry.start_line {
            return Err(format!(
                "{}: line range {}-{} is not 1-based and ordered",
                what(),
                entry.start_line,
                entry.end_line
            ));
        }
        let start =
            i32::try_from(entry.start_line).map_err(|_| format!("{}: line too large", what()))?;
        let end =
            i32::try_from(entry.end_line).map_err(|_| format!("{}: line too large", what()))?;
        c.file_ids.push(entry.file.get());
        c.chunk_indexes.push(chunk_index);
        c.start_lines.push(start);
        c.end_lines.push(end);
        c.languages.push(entry.language.as_deref());
        c.contents.push(&entry.content);
        c.content_hashes.push(entry.content_hash.as_str());
        match &entry.embedding {
            Some(embedding) => {
                let (offset, length) = push_embedding(&mut c.embeddings_flat, embedding)
                    .map_err(|reason| format!("{}: {reason}", what()))?;
                c.models.push(Some(&embedding.model));
                c.endpoints
                    .push(embedding.endpoint.as_ref().map(|e| e.as_str()));
                c.embedding_offsets.push(Some(offset));
                c.embedding_lengths.push(Some(length));
            }
            None => {
                c.models.push(None);
                c.endpoints.push(None);
                c.embedding_offsets.push(None);
                c.embedding_lengths.push(None);
            }
        }
    }
    Ok(c)
}

/// Appends `embedding` to `flat`, returning its offset and length.
pub(crate) fn push_embedding(
    flat: &mut Vec<f32>,
    embedding: &Embedding,
) -> Result<(i32, i32), String> {
    check_embedding(embedding)?;
    let offset =
        i32::try_from(flat.len()).map_err(|_| "batch of embeddings too large".to_string())?;
    let length =
        i32::try_from(embedding.vector.len()).map_err(|_| "embedding too long".to_string())?;
    flat.extend_from_slice(&embedding.vector);
    Ok((offset, length))
}

/// An embedding must name its model and hold finite numbers.
pub(crate) fn check_embedding(embedding: &Embedding) -> Result<(), String> {
    if embedding.model.is_empty() {
        return Err("embedding has no model name".to_string());
    }
    if embedding.vector.is_empty() {
        return Err(format!("embedding of model {:?} is empty", embedding.model));
    }
    if embedding.vector.iter().any(|x| !x.is_finite()) {
        return Err(format!(
            "embedding of model {:?} holds a NaN or infinite value",
            embedding.model
        ));
    }
    Ok(())
}

/// Sorted, de-duplicated copy of `paths`.
pub(crate) fn build_path_set(paths: &[String]) -> Vec<String> {
    let mut set = paths.to_vec();
    set.sort_unstable();
    set.dedup();
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ids::{ContentHash, FileId};
    use crate::store::model::FileKind;

    #[test]
    fn batches_close_on_row_count() {
        let items: Vec<u32> = (0..7).collect();
        let batches = split_batches(&items, 3, usize::MAX, |_| 1);
        assert_eq!(batches, vec![&[0, 1, 2][..], &[3, 4, 5][..], &[6][..]]);
    }

    #[test]
    fn batches_close_on_bytes_and_an_oversized_item_stands_alone() {
        let items = [4usize, 4, 10, 1, 1];
        let batches = split_batches(&items, 100, 8, |w| *w);
        assert_eq!(batches, vec![&[4, 4][..], &[10][..], &[1, 1][..]]);
    }

    #[test]
    fn empty_input_has_no_batches() {
        let items: [u8; 0] = [];
        assert!(split_batches(&items, 10, 10, |_| 1).is_empty());
    }

    #[test]
    fn first_duplicate_path_is_found() {
        assert_eq!(first_duplicate(["a", "b", "a", "b"]), Some("a"));
        assert_eq!(first_duplicate(["a", "b"]), None);
    }

    #[test]
    fn file_columns_reject_sizes_postgres_cannot_hold() {
        let file = NewFile {
            path: "big".into(),
            blob_sha: "0".repeat(40),
            size: u64::MAX,
            mode: 0o100644,
            kind: FileKind::File,
        };
        assert!(
            build_file_columns(&[file])
                .unwrap_err()
                .contains("too large")
        );
    }

    fn entry(embedding: Option<Vec<f32>>) -> NewMemoryEntry {
        NewMemoryEntry {
            file: FileId(7),
            chunk_index: 0,
            start_line: 1,
            end_line: 3,
            language: Some("rust".into()),
            content: "fn main() {}".into(),
            content_hash: ContentHash::of("fn main() {}"),
            embedding: embedding.map(|vector| Embedding {
                model: "m".into(),
                endpoint: None,
                vector,
            }),
        }
    }

    #[test]
    fn embeddings_are_flattened_with_offsets_and_lengths() {
        let entries = [
            entry(Some(vec![1.0, 2.0])),
            entry(None),
            entry(Some(vec![3.0, 4.0, 5.0])),
        ];
        let columns = build_memory_columns(&entries).unwrap();
        assert_eq!(columns.embeddings_flat, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(columns.embedding_offsets, vec![Some(0), None, Some(2)]);
        assert_eq!(columns.embedding_lengths, vec![Some(2), None, Some(3)]);
        assert_eq!(columns.models, vec![Some("m"), None, Some("m")]);
    }

    #[test]
    fn invalid_line_ranges_and_embeddings_are_refused() {
        let mut backwards = entry(None);
        backwards.start_line = 5;
        assert!(
            build_memory_columns(&[backwards])
                .unwrap_err()
                .contains("line range 5-3")
        );
        assert!(
            build_memory_columns(&[entry(Some(vec![]))])
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            build_memory_columns(&[entry(Some(vec![f32::NAN]))])
                .unwrap_err()
                .contains("NaN")
        );
    }

    #[test]
    fn path_sets_are_sorted_and_unique() {
        let paths = vec!["b".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(
            build_path_set(&paths),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
