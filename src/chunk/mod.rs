//! Chunking (import stage): splits the text of a file into memory entries,
//! line-aware chunks with a size limit and a few lines of overlap, each
//! tagged with its line range, content hash and language. Pure, no I/O.
//!
//! Rules, in the order they apply:
//! - Line endings are normalised: `\r\n` becomes `\n`, so a file converted
//!   between CRLF and LF keeps its content hashes (and embeddings).
//! - A chunk holds whole lines, at most [`ChunkerConfig::max_chars`]
//!   characters (Unicode scalar values, line feeds included) and at most
//!   [`ChunkerConfig::max_lines`] lines.
//! - A single line longer than `max_chars` is cut into pieces on character
//!   boundaries (preferably after whitespace); its pieces never overlap.
//! - Consecutive chunks share up to [`ChunkerConfig::overlap_lines`] whole
//!   lines, fewer where the limits leave no room; every chunk adds at least
//!   one new piece, so chunking always ends.
//! - An empty or whitespace-only file has no chunks.
//!
//! The output depends only on the text, the path and the config, so the
//! same file always gives the same chunks; [`ChunkerConfig::fingerprint`]
//! names the algorithm and settings, and changes whenever the output could.

mod language;
mod split;

use sha2::{Digest, Sha256};

pub use language::{Language, detect_language};
pub use split::build_chunks;

/// Bumped whenever the chunks for the same input and settings could change
/// (splitting rules, line-ending handling, the language table), so stored
/// memory is re-chunked.
pub const CHUNKER_ALGORITHM_VERSION: u32 = 1;

/// One memory entry: a run of lines from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the file, from 0, without gaps.
    pub index: u32,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, 1-based, inclusive.
    pub end_line: u32,
    /// The text, with `\n` line endings.
    pub content: String,
    /// Lowercase hex SHA-256 of `content`'s UTF-8 bytes.
    pub content_hash: String,
    /// `None` when the language is not known ("text").
    pub language: Option<Language>,
}

/// Lowercase hex SHA-256 of `content`: the key under which an embedding
/// is reused.
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// How files are split. Built with [`ChunkerConfig::new`] (validated) or
/// [`Default`] (1,500 characters, 60 lines, 3 lines of overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkerConfig {
    max_chars: usize,
    max_lines: usize,
    overlap_lines: usize,
}

/// A chunker setting that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkConfigError {
    #[error("chunk max_chars must be at least 1")]
    ZeroMaxChars,
    #[error("chunk max_lines must be at least 1")]
    ZeroMaxLines,
    #[error("chunk overlap_lines ({overlap}) must be smaller than max_lines ({max_lines})")]
    OverlapNotBelowMaxLines { overlap: usize, max_lines: usize },
}

impl ChunkerConfig {
    pub const DEFAULT_MAX_CHARS: usize = 1_500;
    pub const DEFAULT_MAX_LINES: usize = 60;
    pub const DEFAULT_OVERLAP_LINES: usize = 3;

    /// A config, refused when no chunk could satisfy it.
    pub fn new(
        max_chars: usize,
        max_lines: usize,
        overlap_lines: usize,
    ) -> Result<Self, ChunkConfigError> {
        if max_chars == 0 {
            return Err(ChunkConfigError::ZeroMaxChars);
        }
        if max_lines == 0 {
            return Err(ChunkConfigError::ZeroMaxLines);
        }
        if overlap_lines >= max_lines {
            return Err(ChunkConfigError::OverlapNotBelowMaxLines {
                overlap: overlap_lines,
                max_lines,
            });
        }
        Ok(ChunkerConfig {
            max_chars,
            max_lines,
            overlap_lines,
        })
    }

    /// Most characters in a chunk (Unicode scalar values, `\n` included).
    pub fn max_chars(&self) -> usize {
        self.max_chars
    }

    /// Most lines in a chunk.
    pub fn max_lines(&self) -> usize {
        self.max_lines
    }

    /// Whole lines a chunk repeats from the end of the previous one.
    pub fn overlap_lines(&self) -> usize {
        self.overlap_lines
    }

    /// Names the algorithm version and every setting, e.g.
    /// `chunker/v1 max_chars=1500 max_lines=60 overlap_lines=3`. Stored
    /// with a sync; a different fingerprint means "re-chunk everything".
    pub fn fingerprint(&self) -> String {
        format!(
            "chunker/v{CHUNKER_ALGORITHM_VERSION} max_chars={} max_lines={} overlap_lines={}",
            self.max_chars, self.max_lines, self.overlap_lines
        )
    }
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig {
            max_chars: Self::DEFAULT_MAX_CHARS,
            max_lines: Self::DEFAULT_MAX_LINES,
            overlap_lines: Self::DEFAULT_OVERLAP_LINES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_sensible() {
        let d = ChunkerConfig::default();
        assert_eq!(
            ChunkerConfig::new(d.max_chars(), d.max_lines(), d.overlap_lines()),
            Ok(d)
        );
        assert_eq!(
            d.fingerprint(),
            "chunker/v1 max_chars=1500 max_lines=60 overlap_lines=3"
        );
    }

    #[test]
    fn fingerprint_changes_with_every_setting() {
        let base = ChunkerConfig::new(100, 10, 2).unwrap();
        let others = [
            ChunkerConfig::new(101, 10, 2).unwrap(),
            ChunkerConfig::new(100, 11, 2).unwrap(),
            ChunkerConfig::new(100, 10, 1).unwrap(),
        ];
        for other in others {
            assert_ne!(base.fingerprint(), other.fingerprint(), "{other:?}");
        }
        assert_eq!(
            base.fingerprint(),
            ChunkerConfig::new(100, 10, 2).unwrap().fingerprint()
        );
    }

    #[test]
    fn configs_no_chunk_could_satisfy_are_refused() {
        assert_eq!(
            ChunkerConfig::new(0, 10, 0),
            Err(ChunkConfigError::ZeroMaxChars)
        );
        assert_eq!(
            ChunkerConfig::new(10, 0, 0),
            Err(ChunkConfigError::ZeroMaxLines)
        );
        assert_eq!(
            ChunkerConfig::new(10, 3, 3),
            Err(ChunkConfigError::OverlapNotBelowMaxLines {
                overlap: 3,
                max_lines: 3
            })
        );
    }

    #[test]
    fn content_hash_is_lowercase_sha256_hex() {
        assert_eq!(
            content_hash("hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}
