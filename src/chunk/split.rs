//! The splitting algorithm behind [`build_chunks`]. Pure, no I/O.
//!
//! The text is first cut into *pieces*: each line with its `\n`, or, for a
//! line longer than the limit, consecutive slices of it. Chunks are then
//! packed greedily from pieces; the next chunk starts a few whole-line
//! pieces before the end of the previous one (the overlap), but always
//! after its start and never so far back that no new piece would fit.

use std::borrow::Cow;
use std::ops::Range;

use super::{Chunk, ChunkerConfig, content_hash, detect_language};

/// Splits the text of the file at `path` into chunks (see the module
/// documentation for the rules). Deterministic; empty and whitespace-only
/// files give no chunks.
pub fn build_chunks(config: &ChunkerConfig, path: &str, text: &str) -> Vec<Chunk> {
    let text = normalize_line_endings(text);
    let language = detect_language(path, &text);
    plan_chunks(config, &text)
        .into_iter()
        .enumerate()
        .map(|(index, span)| {
            let content = text[span.bytes].to_string();
            Chunk {
                index: to_u32(index),
                start_line: span.start_line,
                end_line: span.end_line,
                content_hash: content_hash(&content),
                content,
                language,
            }
        })
        .collect()
}

/// `\r\n` → `\n`; a lone `\r` is content and stays.
fn normalize_line_endings(text: &str) -> Cow<'_, str> {
    if text.contains("\r\n") {
        Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Where one chunk lies in the normalised text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    bytes: Range<usize>,
    start_line: u32,
    end_line: u32,
}

/// A line, or a slice of a line longer than the limit.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: usize,
    end: usize,
    line: u32,
    chars: usize,
    /// The piece is a whole line (only those are repeated as overlap).
    whole_line: bool,
}

fn plan_chunks(config: &ChunkerConfig, text: &str) -> Vec<Span> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let pieces = build_pieces(text, config.max_chars());
    let mut spans = Vec::new();
    let mut start = 0;
    // `start` strictly increases on every iteration, so this ends after at
    // most `pieces.len()` chunks.
    while start < pieces.len() {
        let end = pack(config, &pieces, start);
        spans.push(Span {
            bytes: pieces[start].start..pieces[end - 1].end,
            start_line: pieces[start].line,
            end_line: pieces[end - 1].line,
        });
        if end == pieces.len() {
            break;
        }
        start = overlap_start(config, &pieces, start, end);
    }
    spans
}

/// The end (exclusive) of the chunk that starts at piece `start`: as many
/// pieces as the limits allow, and at least one.
fn pack(config: &ChunkerConfig, pieces: &[Piece], start: usize) -> usize {
    let mut chars = 0;
    let mut lines = 0;
    let mut last_line = None;
    let mut end = start;
    while let Some(piece) = pieces.get(end) {
        let new_lines = lines + usize::from(last_line != Some(piece.line));
        let fits = chars + piece.chars <= config.max_chars() && new_lines <= config.max_lines();
        if end > start && !fits {
            break;
        }
        chars += piece.chars;
        lines = new_lines;
        last_line = Some(piece.line);
        end += 1;
    }
    end
}

/// Where the chunk after `start..end` starts: up to `overlap_lines` whole
/// lines before `end`, after `start`, leaving room for the piece at `end`.
fn overlap_start(config: &ChunkerConfig, pieces: &[Piece], start: usize, end: usize) -> usize {
    let next = &pieces[end];
    let mut chars = 0;
    let mut lines = 0;
    let mut from = end;
    while from > start + 1 && lines < config.overlap_lines() {
        let piece = &pieces[from - 1];
        // The overlap is whole lines, so `next` is on a line of its own.
        let room = chars + piece.chars + next.chars <= config.max_chars()
            && lines + 2 <= config.max_lines();
        if !piece.whole_line || !room {
            break;
        }
        chars += piece.chars;
        lines += 1;
        from -= 1;
    }
    from
}

fn build_pieces(text: &str, max_chars: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let line_no = to_u32(number + 1);
        let chars = line.chars().count();
        if chars <= max_chars {
            pieces.push(Piece {
                start: offset,
                end: offset + line.len(),
                line: line_no,
                chars,
                whole_line: true,
            });
        } else {
            let mut rest = line;
            let mut at = offset;
            // Each cut takes at least one character, so this ends.
            while !rest.is_empty() {
                let (bytes, chars) = cut_point(rest, max_chars);
                pieces.push(Piece {
                    start: at,
                    end: at + bytes,
                    line: line_no,
                    chars,
                    whole_line: false,
                });
                rest = &rest[bytes..];
                at += bytes;
            }
        }
        offset += line.len();
    }
    pieces
}

/// How much of `s` (non-empty) the next slice of an over-long line takes,
/// in bytes and characters: at most `max_chars` characters, cut on a
/// character boundary, after the last whitespace when that keeps at least
/// half the window.
fn cut_point(s: &str, max_chars: usize) -> (usize, usize) {
    let mut count = 0;
    let mut after_whitespace = None;
    for (i, c) in s.char_indices() {
        if count == max_chars {
            return match after_whitespace {
                Some((bytes, chars)) if chars * 2 >= max_chars => (bytes, chars),
                _ => (i, count),
            };
        }
        count += 1;
        if c.is_whitespace() {
            after_whitespace = Some((i + c.len_utf8(), count));
        }
    }
    (s.len(), count)
}

/// Line numbers and chunk indexes beyond `u32` would need a file of more
/// than 4 GiB; saturate rather than wrap.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
