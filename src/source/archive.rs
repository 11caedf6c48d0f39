//! Reading a repository archive: a gzip'd tar as GitHub's tarball endpoint
//! serves it, every file below one top directory named after the commit.
//! One archive replaces a request per file when a run processes most of a
//! repository (a first sync of 100,000 files would otherwise cost 100,000
//! requests, twenty hours of a token's rate limit).
//!
//! Nothing in an archive is trusted: `export-ignore` and `export-subst`
//! attributes, LFS smudging or a truncated download make it differ from the
//! tree, so callers keep a file only when its bytes hash to the blob id the
//! tree lists ([`build_blob_sha1`](super::tree::build_blob_sha1)) and read the rest one by one. Reading is
//! blocking (decompression and hashing are CPU work): it runs on a blocking
//! thread, fed by the async download.

use std::io::Read;

/// A downloaded (or downloading) archive of one commit.
pub struct Archive {
    reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").finish_non_exhaustive()
    }
}

impl Archive {
    /// An archive from the bytes of a gzip'd tar. Nothing is read until
    /// [`Archive::for_each_file`] (the reader may block).
    pub fn from_gzip(reader: impl Read + Send + 'static) -> Archive {
        Archive {
            reader: Box::new(reader),
        }
    }

    /// Calls `each` with the path (below the top directory) and bytes of
    /// every regular file of at most `max_size` bytes, in archive order,
    /// until `each` returns false. Other entries are skipped. Blocking.
    pub fn for_each_file(
        self,
        max_size: u64,
        mut each: impl FnMut(String, Vec<u8>) -> bool,
    ) -> std::io::Result<()> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(self.reader));
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type() != tar::EntryType::Regular || entry.size() > max_size {
                continue;
            }
            let Some(path) = below_top(&entry.path_bytes()).map(str::to_string) else {
                continue;
            };
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            entry.read_to_end(&mut bytes)?;
            if !each(path, bytes) {
                break;
            }
        }
        Ok(())
    }
}

/// The path below the archive's top directory (`owner-repo-sha/`), when it
/// is UTF-8; archives of non-UTF-8 names leave those to per-file reads.
fn below_top(raw: &[u8]) -> Option<&str> {
    let path = std::str::from_utf8(raw).ok()?;
    let (_, rest) = path.split_once('/')?;
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip_tar(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        for (path, target) in links {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, path, target).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn read_all(archive: Archive, max: u64) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        archive
            .for_each_file(max, |path, bytes| {
                files.push((path, bytes));
                true
            })
            .unwrap();
        files
    }

    #[test]
    fn regular_files_come_below_the_top_directory_and_the_rest_is_skipped() {
        let long = format!("o-r-abc/{}/deep.rs", "d".repeat(200));
        let bytes = gzip_tar(
            &[
                ("o-r-abc/src/main.rs", b"fn main() {}\n"),
                ("o-r-abc/big.bin", &[0u8; 64]),
                (&long, b"x"),
            ],
            &[("o-r-abc/link", "src/main.rs")],
        );
        let files = read_all(Archive::from_gzip(std::io::Cursor::new(bytes)), 20);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "src/main.rs".to_string(),
                long.trim_start_matches("o-r-abc/").to_string()
            ]
        );
        assert_eq!(files[0].1, b"fn main() {}\n");
    }

    #[test]
    fn a_truncated_archive_is_an_error_after_the_files_before_the_cut() {
        let bytes = gzip_tar(&[("t/a", &[b'a'; 3000]), ("t/b", &[b'b'; 3000])], &[]);
        let mut seen = Vec::new();
        let result = Archive::from_gzip(std::io::Cursor::new(bytes[..bytes.len() / 2].to_vec()))
            .for_each_file(u64::MAX, |path, _| {
                seen.push(path);
                true
            });
        assert!(result.is_err(), "a cut archive must not look complete");
        assert!(seen.len() < 2);
    }
}
