use super::*;
use crate::chunk::Language;

fn config(max_chars: usize, max_lines: usize, overlap: usize) -> ChunkerConfig {
    ChunkerConfig::new(max_chars, max_lines, overlap).unwrap()
}

fn numbered_lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

fn ranges(chunks: &[Chunk]) -> Vec<(u32, u32)> {
    chunks.iter().map(|c| (c.start_line, c.end_line)).collect()
}

// ---------------------------------------------------------------- targeted

#[test]
fn empty_and_whitespace_only_files_have_no_chunks() {
    let c = ChunkerConfig::default();
    assert!(build_chunks(&c, "a.rs", "").is_empty());
    assert!(build_chunks(&c, "a.rs", "\n\n  \r\n\t\n").is_empty());
}

#[test]
fn a_small_file_is_one_chunk_equal_to_the_file() {
    let text = "fn main() {\n    println!(\"hi\");\n}\n";
    let chunks = build_chunks(&ChunkerConfig::default(), "src/main.rs", text);
    assert_eq!(
        chunks,
        vec![Chunk {
            index: 0,
            start_line: 1,
            end_line: 3,
            content: text.to_string(),
            content_hash: content_hash(text),
            language: Some(Language::Rust),
        }]
    );
}

#[test]
fn a_last_line_without_newline_is_kept_as_is() {
    let chunks = build_chunks(&config(100, 2, 0), "notes", "a\nb\nc");
    assert_eq!(ranges(&chunks), vec![(1, 2), (3, 3)]);
    assert_eq!(chunks[1].content, "c");
    assert_eq!(chunks[0].language, None);
}

#[test]
fn line_limit_with_overlap_gives_the_expected_ranges() {
    let chunks = build_chunks(&config(10_000, 10, 2), "f.txt", &numbered_lines(30));
    assert_eq!(ranges(&chunks), vec![(1, 10), (9, 18), (17, 26), (25, 30)]);
    assert!(chunks[1].content.starts_with("line 9\nline 10\nline 11\n"));
    let indexes: Vec<u32> = chunks.iter().map(|c| c.index).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
}

#[test]
fn character_limit_splits_between_lines() {
    // Each line is 10 characters with its newline.
    let text = "123456789\n".repeat(5);
    let chunks = build_chunks(&config(25, 100, 0), "f", &text);
    assert_eq!(ranges(&chunks), vec![(1, 2), (3, 4), (5, 5)]);
    assert!(chunks.iter().all(|c| c.content.ends_with('\n')));
}

#[test]
fn overlap_shrinks_when_the_limit_leaves_no_room_for_it() {
    // 10-character lines and room for 3 per chunk: of the 5 lines of
    // overlap asked for, only 2 fit beside the one new line.
    let text = "123456789\n".repeat(7);
    let chunks = build_chunks(&config(30, 100, 5), "f", &text);
    assert_eq!(
        ranges(&chunks),
        vec![(1, 3), (2, 4), (3, 5), (4, 6), (5, 7)]
    );
}

#[test]
fn overlap_never_stops_progress_even_when_it_covers_the_whole_chunk() {
    let chunks = build_chunks(&config(1_000, 2, 1), "f", &numbered_lines(4));
    assert_eq!(ranges(&chunks), vec![(1, 2), (2, 3), (3, 4)]);
}

#[test]
fn an_over_long_line_is_cut_after_whitespace_when_possible() {
    let text = "short\nalpha beta gamma delta\nend\n";
    let chunks = build_chunks(&config(12, 100, 1), "f", text);
    let contents: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(
        contents,
        vec!["short\n", "alpha beta ", "gamma delta\n", "end\n"]
    );
    assert_eq!(ranges(&chunks), vec![(1, 1), (2, 2), (2, 2), (3, 3)]);
}

#[test]
fn an_over_long_line_without_whitespace_is_cut_on_character_boundaries() {
    let text = "🦀é漢".repeat(4); // 12 characters, 36 bytes, no newline
    let chunks = build_chunks(&config(5, 10, 0), "f", &text);
    let contents: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(contents, vec!["🦀é漢🦀é", "漢🦀é漢🦀", "é漢"]);
    assert!(chunks.iter().all(|c| (c.start_line, c.end_line) == (1, 1)));
}

#[test]
fn the_tail_of_a_cut_line_shares_a_chunk_with_the_following_lines() {
    let text = "abcdefghij\nk\nl\n";
    let chunks = build_chunks(&config(7, 10, 0), "f", text);
    let contents: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(contents, vec!["abcdefg", "hij\nk\n", "l\n"]);
}

#[test]
fn crlf_files_chunk_like_their_lf_version() {
    let lf = numbered_lines(40);
    let crlf = lf.replace('\n', "\r\n");
    let c = config(100, 7, 2);
    let from_crlf = build_chunks(&c, "a.py", &crlf);
    assert_eq!(from_crlf, build_chunks(&c, "a.py", &lf));
    assert!(from_crlf.iter().all(|chunk| !chunk.content.contains('\r')));
}

#[test]
fn a_lone_carriage_return_is_content_not_a_line_break() {
    let chunks = build_chunks(&ChunkerConfig::default(), "f", "a\rb\nc\n");
    assert_eq!(ranges(&chunks), vec![(1, 2)]);
    assert_eq!(chunks[0].content, "a\rb\nc\n");
}

#[test]
fn every_chunk_carries_the_language_of_the_file() {
    let chunks = build_chunks(&config(20, 2, 0), "deploy/Dockerfile", &numbered_lines(9));
    assert!(chunks.len() > 1);
    assert!(
        chunks
            .iter()
            .all(|c| c.language == Some(Language::Dockerfile))
    );
}

#[test]
fn chunking_is_deterministic() {
    let text = generate_text(&mut Rng(7), 400);
    let c = config(50, 6, 2);
    assert_eq!(
        build_chunks(&c, "x.go", &text),
        build_chunks(&c, "x.go", &text)
    );
}

#[test]
fn default_config_keeps_a_typical_source_file_in_few_chunks() {
    let line = "    let value = compute(&input, options).context(\"compute\")?;\n";
    let text = line.repeat(200);
    let chunks = build_chunks(&ChunkerConfig::default(), "src/lib.rs", &text);
    assert!(chunks.len() <= 10, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.content.chars().count() <= 1_500));
}

// ---------------------------------------------------------------- properties

/// xorshift64*: a deterministic generator, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Text made of words, spaces, multi-byte characters, blank lines, CRLF and
/// the occasional very long line, with or without a final newline.
fn generate_text(rng: &mut Rng, tokens: usize) -> String {
    const TOKENS: &[&str] = &[
        "fn",
        "let",
        "x",
        "value_of_thing",
        " ",
        "  ",
        "\t",
        "é",
        "漢字",
        "🦀",
        "\n",
        "\n",
        "\n",
        "\r\n",
        "\n\n",
        "{",
        "}",
        ";",
        "\r",
    ];
    let mut text = String::new();
    for _ in 0..tokens {
        match rng.below(40) {
            0 => text.push_str(&"z".repeat(rng.below(200))),
            1 => text.push_str(&"word ".repeat(rng.below(60))),
            _ => text.push_str(TOKENS[rng.below(TOKENS.len())]),
        }
    }
    if rng.below(2) == 0 {
        text.push('\n');
    }
    text
}

/// Checks every documented property of the chunks of `text` under `c`.
fn check_properties(c: &ChunkerConfig, text: &str, label: &str) {
    let normalized = text.replace("\r\n", "\n");
    let chunks = build_chunks(c, "f.rs", text);
    let spans = plan_chunks(c, &normalized);
    assert_eq!(chunks.len(), spans.len(), "{label}");

    if normalized.trim().is_empty() {
        assert!(chunks.is_empty(), "{label}: blank text has chunks");
        return;
    }
    assert!(!chunks.is_empty(), "{label}: text without chunks");
    let line_count = normalized.split_inclusive('\n').count() as u32;
    let bytes = normalized.as_bytes();
    let line_of = |byte: usize| bytes[..byte].iter().filter(|b| **b == b'\n').count() as u32 + 1;
    let at_line_start = |byte: usize| byte == 0 || normalized.as_bytes()[byte - 1] == b'\n';
    let at_line_end = |byte: usize| byte == normalized.len() || at_line_start(byte);
    let line_len = |byte: usize| {
        let start = normalized[..byte].rfind('\n').map_or(0, |i| i + 1);
        let end = normalized[byte..]
            .find('\n')
            .map_or(normalized.len(), |i| byte + i + 1);
        normalized[start..end].chars().count()
    };

    let mut rebuilt = String::new();
    for (i, (chunk, span)) in chunks.iter().zip(&spans).enumerate() {
        let label = format!("{label}, chunk {i}");
        // Identity and hash.
        assert_eq!(chunk.index as usize, i, "{label}");
        assert_eq!(chunk.content, normalized[span.bytes.clone()], "{label}");
        assert_eq!(chunk.content_hash, content_hash(&chunk.content), "{label}");
        assert!(!chunk.content.is_empty(), "{label}");
        // Within the limits.
        assert!(chunk.content.chars().count() <= c.max_chars(), "{label}");
        assert!(
            (chunk.end_line - chunk.start_line + 1) as usize <= c.max_lines(),
            "{label}"
        );
        // Line numbers agree with the bytes.
        assert_eq!(chunk.start_line, line_of(span.bytes.start), "{label}");
        assert_eq!(chunk.end_line, line_of(span.bytes.end - 1), "{label}");
        // A boundary inside a line only where that line is over the limit.
        for (byte, inside) in [
            (span.bytes.start, !at_line_start(span.bytes.start)),
            (span.bytes.end, !at_line_end(span.bytes.end)),
        ] {
            if inside {
                assert!(line_len(byte) > c.max_chars(), "{label}: cut at {byte}");
            }
        }

        match i.checked_sub(1).map(|p| &spans[p]) {
            None => {
                assert_eq!(span.bytes.start, 0, "{label}");
                assert_eq!(chunk.start_line, 1, "{label}");
                rebuilt.push_str(&chunk.content);
            }
            Some(prev) => {
                // Progress, no gap, and an overlap of whole lines only.
                assert!(span.bytes.start > prev.bytes.start, "{label}");
                assert!(span.bytes.start <= prev.bytes.end, "{label}: gap");
                assert!(chunk.start_line <= chunks[i - 1].end_line + 1, "{label}");
                let overlap = &normalized[span.bytes.start..prev.bytes.end];
                if !overlap.is_empty() {
                    assert!(at_line_start(span.bytes.start), "{label}");
                    assert!(overlap.ends_with('\n'), "{label}");
                    assert!(
                        overlap.matches('\n').count() <= c.overlap_lines(),
                        "{label}"
                    );
                }
                rebuilt.push_str(&chunk.content[overlap.len()..]);
            }
        }
    }
    assert_eq!(spans.last().unwrap().bytes.end, normalized.len(), "{label}");
    assert_eq!(chunks.last().unwrap().end_line, line_count, "{label}");
    assert_eq!(rebuilt, normalized, "{label}: chunks minus overlap differ");
}

#[test]
fn random_texts_and_configs_satisfy_every_chunk_property() {
    for seed in 1..=600u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let max_lines = 1 + rng.below(12);
        let c = config(1 + rng.below(90), max_lines, rng.below(max_lines));
        let tokens = rng.below(300);
        let text = generate_text(&mut rng, tokens);
        check_properties(&c, &text, &format!("seed {seed}, {c:?}"));
    }
}

#[test]
fn the_default_config_satisfies_every_chunk_property_on_large_texts() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed | 1);
        let text = generate_text(&mut rng, 5_000);
        check_properties(&ChunkerConfig::default(), &text, &format!("seed {seed}"));
    }
}

#[test]
fn crlf_and_lf_versions_of_random_texts_chunk_identically() {
    for seed in 1..=100u64 {
        let mut rng = Rng(seed | 1);
        let lf = generate_text(&mut rng, 200).replace('\r', "");
        let crlf = lf.replace('\n', "\r\n");
        let c = config(40, 5, 1);
        assert_eq!(
            build_chunks(&c, "a", &lf),
            build_chunks(&c, "a", &crlf),
            "seed {seed}"
        );
    }
}
