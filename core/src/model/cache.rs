//! The weight cache: what an INT8 load makes of `model.bin` (quantized, packed matrices, f16
//! embeddings, the f32 tensors) written once to a file and mapped read-only by later loads, so
//! that a start neither reads nor quantizes the model, and every process on the machine shares
//! the same page-cache pages.
//!
//! File layout: a 64-byte header (magic, format version, total length, where the index is, a
//! CRC-32 of everything after the header), the arrays (each 64-byte aligned), then a JSON index
//! naming each array and the `model.bin` it was made from (size, times, inode, CRC-32 of the
//! whole file). Written to a temporary file and renamed into place, so a reader sees a whole
//! file or none; a file that fails any check is ignored (and rebuilt by the loader).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::f16;
use npuwhisper_kernels::qgemm::QuantizedWeights;
use npuwhisper_kernels::store::{Pinned, Plain, Store};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"NPUWCACH";
/// Bumped whenever the layout or what the loader stores changes (including the kernels'
/// packing): an older file is then rebuilt.
const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 64;
const ALIGN: usize = 64;
/// File name beside the model.
pub const FILE_NAME: &str = "npuwhisper-int8.cache";

/// Where the cache of a model goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WeightCache {
    /// No cache: every load quantizes.
    Off,
    /// Beside the model (`npuwhisper-int8.cache` in its directory), or where the directory is
    /// not writable, in `$XDG_CACHE_HOME/npuwhisper` (`~/.cache/npuwhisper`).
    #[default]
    Beside,
    /// In this directory, one file per model directory.
    In(PathBuf),
}

impl WeightCache {
    /// `NPUWHISPER_WEIGHT_CACHE`: `off` (or `0`), a directory, or unset for [`WeightCache::Beside`].
    pub fn from_env() -> WeightCache {
        match std::env::var_os("NPUWHISPER_WEIGHT_CACHE") {
            Some(v) if v == "off" || v == "0" => WeightCache::Off,
            Some(v) if !v.is_empty() => WeightCache::In(PathBuf::from(v)),
            _ => WeightCache::Beside,
        }
    }

    /// Where to look for the cache of `model_dir`, in order; the first writable one is where
    /// a new one goes.
    pub(crate) fn candidates(&self, model_dir: &Path) -> Vec<PathBuf> {
        let canonical = model_dir.canonicalize().unwrap_or_else(|_| model_dir.to_path_buf());
        // One directory holds the caches of many models: named after the model's path.
        let named = |dir: PathBuf| {
            dir.join(format!(
                "{:08x}-{FILE_NAME}",
                crc32fast::hash(canonical.as_os_str().as_encoded_bytes())
            ))
        };
        match self {
            WeightCache::Off => Vec::new(),
            WeightCache::In(dir) => vec![named(dir.clone())],
            WeightCache::Beside => {
                let home = std::env::var_os("XDG_CACHE_HOME")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
                std::iter::once(canonical.join(FILE_NAME))
                    .chain(home.map(|h| named(h.join("npuwhisper"))))
                    .collect()
            }
        }
    }
}

/// What became of the weight cache on a load, for the log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Not used: an f32 load, or the cache is off.
    Unused,
    /// The weights are mapped from this file.
    Mapped(PathBuf),
    /// No usable cache: the weights were made from `model.bin` and written to `path`, or not
    /// written (`path` is `None`) for the reason in `note`. `note` also says why an existing
    /// file was not used (the model changed, the file is corrupt).
    Built { path: Option<PathBuf>, note: String },
}

/// Identity of the model files a cache was made from: `model.bin`'s size, times and place, and
/// CRC-32s of samples of it and of the whole text files (whose tokenizer a mapped load trusts).
///
/// Not a CRC of all of `model.bin`: reading it would cost a start as much as the rest of the
/// load. Any write changes its change time (which no program can set back), a copy its inode;
/// the samples (the tensor table and 16 spread blocks) catch a same-size copy made with its
/// times kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Source {
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
    inode: u64,
    device: u64,
    samples_crc32: u32,
    texts_crc32: u32,
}

/// Bytes of `model.bin` read for [`Source`]: its start (the tensor table), and blocks spread over it.
const HEAD_SAMPLE: usize = 1 << 20;
const SAMPLE: usize = 64 << 10;
const SAMPLES: u64 = 16;

impl Source {
    pub fn of(bin: &Path, texts: &[&[u8]]) -> std::io::Result<Source> {
        let file = File::open(bin)?;
        let meta = file.metadata()?;
        let size = meta.len();
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; HEAD_SAMPLE];
        let mut sample = |at: u64, len: usize| -> std::io::Result<()> {
            let len = len.min(size.saturating_sub(at) as usize);
            file.read_exact_at(&mut buf[..len], at)?;
            crc.update(&buf[..len]);
            Ok(())
        };
        sample(0, HEAD_SAMPLE)?;
        for i in 1..=SAMPLES {
            sample(size / (SAMPLES + 1) * i, SAMPLE)?;
        }
        sample(size.saturating_sub(SAMPLE as u64), SAMPLE)?;
        let mut texts_crc = crc32fast::Hasher::new();
        for t in texts {
            texts_crc.update(&(t.len() as u64).to_le_bytes());
            texts_crc.update(t);
        }
        Ok(Source {
            size,
            modified_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            changed_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            inode: meta.ino(),
            device: meta.dev(),
            samples_crc32: crc.finalize(),
            texts_crc32: texts_crc.finalize(),
        })
    }
}

/// Where one array is: byte offset and number of values.
type Span = (usize, usize);

#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    F32(Span),
    F16(Span),
    Int8 {
        n: usize,
        k: usize,
        packed: Span,
        scales: Span,
        row_sums: Span,
    },
}

#[derive(Serialize, Deserialize)]
struct Index {
    source: Source,
    entries: HashMap<String, Entry>,
}

struct Mapping(memmap2::Mmap);

// SAFETY: the mapping is owned by `Mapping`, so its address is fixed until it is dropped; the
// file is mapped read-only and this program only ever replaces caches by rename, never writing
// one in place, so the bytes stay unchanged while mapped. (Send + Sync come from `Mmap`.)
unsafe impl Pinned for Mapping {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A checked cache file, mapped.
pub(crate) struct Cache {
    map: Arc<dyn Pinned>,
    entries: HashMap<String, Entry>,
    pub path: PathBuf,
}

impl Cache {
    /// The cache at `path` if it is whole and made from `source`. `Ok(None)`: there is no file.
    pub fn open(path: &Path, source: &Source) -> Result<Option<Cache>, String> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        // SAFETY: see `Mapping`; a file truncated under the mapping by someone else would fault,
        // which the loader never does (it replaces caches by rename).
        let map =
            unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|e| format!("cannot map: {e}"))?;
        let bytes: &[u8] = &map;
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err("corrupt: not a weight cache (bad header)".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "made by another version of npuwhisper (format {version}, this one reads {FORMAT_VERSION})"
            ));
        }
        let (total, index_at, index_len, crc) = (u64_at(16), u64_at(24), u64_at(32), u32_at(12));
        if total != bytes.len() {
            return Err(format!(
                "truncated or corrupt: {} bytes, the header says {total}",
                bytes.len()
            ));
        }
        if parallel_crc(&bytes[HEADER..]) != crc {
            return Err("corrupt: checksum mismatch".into());
        }
        let index_end = index_at
            .checked_add(index_len)
            .filter(|&e| e <= total && index_at >= HEADER)
            .ok_or("corrupt: index out of bounds")?;
        let index: Index =
            serde_json::from_slice(&bytes[index_at..index_end]).map_err(|e| format!("corrupt index: {e}"))?;
        if index.source != *source {
            return Err("the model changed since it was made".into());
        }
        Ok(Some(Cache {
            map: Arc::new(Mapping(map)),
            entries: index.entries,
            path: path.to_path_buf(),
        }))
    }

    fn entry(&self, name: &str) -> Result<&Entry, String> {
        self.entries
            .get(name)
            .ok_or_else(|| format!("weight cache {} has no {name}", self.path.display()))
    }

    fn view<T: Plain>(&self, (off, len): Span, want: usize, name: &str) -> Result<Store<T>, String> {
        if len != want {
            return Err(format!(
                "weight cache {}: {name} has {len} values, expected {want}",
                self.path.display()
            ));
        }
        Store::view(&self.map, off, len).map_err(|e| format!("weight cache {}: {name}: {e}", self.path.display()))
    }

    pub fn f32(&self, name: &str, len: usize) -> Result<Store<f32>, String> {
        match self.entry(name)? {
            Entry::F32(span) => self.view(*span, len, name),
            _ => Err(format!("weight cache {}: {name} is not f32", self.path.display())),
        }
    }

    pub fn f16(&self, name: &str, len: usize) -> Result<Store<f16>, String> {
        match self.entry(&f16_name(name))? {
            Entry::F16(span) => self.view(*span, len, name),
            _ => Err(format!("weight cache {}: {name} is not f16", self.path.display())),
        }
    }

    pub fn int8(&self, name: &str, n_out: usize, k: usize) -> Result<QuantizedWeights, String> {
        let Entry::Int8 {
            n,
            k: kk,
            packed,
            scales,
            row_sums,
        } = self.entry(name)?
        else {
            return Err(format!("weight cache {}: {name} is not INT8", self.path.display()));
        };
        if (*n, *kk) != (n_out, k) {
            return Err(format!(
                "weight cache {}: {name} is {n}×{kk}, expected {n_out}×{k}",
                self.path.display()
            ));
        }
        let (packed, scales, row_sums) = (
            self.view(*packed, packed.1, name)?,
            self.view(*scales, scales.1, name)?,
            self.view(*row_sums, row_sums.1, name)?,
        );
        QuantizedWeights::from_parts(n_out, k, packed, scales, row_sums)
            .map_err(|e| format!("weight cache {}: {name}: {e}", self.path.display()))
    }
}

/// CRC-32 of `bytes`, blocks of it on all the threads, combined.
fn parallel_crc(bytes: &[u8]) -> u32 {
    use rayon::prelude::*;
    bytes
        .par_chunks(8 << 20)
        .map(|c| {
            let mut h = crc32fast::Hasher::new();
            h.update(c);
            h
        })
        .reduce(crc32fast::Hasher::new, |mut a, b| {
            a.combine(&b);
            a
        })
        .finalize()
}

fn f16_name(name: &str) -> String {
    format!("{name}#f16")
}

/// Writes a cache as the loader makes the arrays, into a temporary file renamed into place by
/// [`Writer::finish`]. The first I/O error stops the writing (the load goes on without).
pub(crate) struct Writer {
    /// `None` once finished.
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    pos: usize,
    crc: crc32fast::Hasher,
    entries: HashMap<String, Entry>,
    error: Option<String>,
}

impl Writer {
    pub fn create(path: &Path) -> std::io::Result<Writer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}-{:x}", std::process::id(), fastrand::u64(..)));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(&[0u8; HEADER])?;
        Ok(Writer {
            out: Some(out),
            tmp,
            path: path.to_path_buf(),
            pos: HEADER,
            crc: crc32fast::Hasher::new(),
            entries: HashMap::new(),
            error: None,
        })
    }

    fn bytes(&mut self, b: &[u8]) {
        if let (None, Some(out)) = (&self.error, &mut self.out) {
            if let Err(e) = out.write_all(b) {
                self.error = Some(e.to_string());
            }
        }
        self.crc.update(b);
        self.pos += b.len();
    }

    /// Writes `data` at the next aligned offset; returns its span.
    fn array<T: Plain>(&mut self, data: &Store<T>) -> Span {
        let pad = self.pos.next_multiple_of(ALIGN) - self.pos;
        self.bytes(&[0u8; ALIGN][..pad]);
        let at = self.pos;
        self.bytes(data.as_bytes());
        (at, data.len())
    }

    pub fn f32(&mut self, name: &str, data: &Store<f32>) {
        let span = self.array(data);
        self.entries.insert(name.to_string(), Entry::F32(span));
    }

    pub fn f16(&mut self, name: &str, data: &Store<f16>) {
        let span = self.array(data);
        self.entries.insert(f16_name(name), Entry::F16(span));
    }

    pub fn int8(&mut self, name: &str, q: &QuantizedWeights) {
        let (packed, scales, row_sums) = q.parts();
        let entry = Entry::Int8 {
            n: q.n_out(),
            k: q.k(),
            packed: self.array(packed),
            scales: self.array(scales),
            row_sums: self.array(row_sums),
        };
        self.entries.insert(name.to_string(), entry);
    }

    /// Writes the index and the header and renames the file into place.
    pub fn finish(mut self, source: Source) -> Result<PathBuf, String> {
        let index = serde_json::to_vec(&Index {
            source,
            entries: std::mem::take(&mut self.entries),
        })
        .map_err(|e| e.to_string())?;
        let index_at = self.pos;
        self.bytes(&index);
        let out = self.out.take().expect("finished once");
        let result = self.error.take().map_or(Ok(()), Err).and_then(|()| {
            let mut header = [0u8; HEADER];
            header[..8].copy_from_slice(MAGIC);
            header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            header[12..16].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
            for (at, v) in [(16, self.pos), (24, index_at), (32, index.len())] {
                header[at..at + 8].copy_from_slice(&(v as u64).to_le_bytes());
            }
            let mut file = out.into_inner().map_err(|e| e.to_string())?;
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(&header))
                .and_then(|()| file.sync_all())
                .map_err(|e| e.to_string())?;
            std::fs::rename(&self.tmp, &self.path).map_err(|e| e.to_string())
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result.map(|()| self.path.clone())
    }
}

impl Drop for Writer {
    /// A load that failed leaves no temporary file behind.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// What a load does with the cache.
pub(crate) enum Plan {
    /// No cache (f32, or turned off).
    Unused,
    /// Map the weights from this one.
    Map { cache: Cache, source: Source },
    /// Make the weights and write them to the first of `candidates` that takes a file; `notes`
    /// say why the existing files were not used.
    Write {
        candidates: Vec<PathBuf>,
        source: Source,
        notes: Vec<String>,
    },
}

impl Plan {
    /// Looks for a usable cache of the model in `model_dir` (its `model.bin` at `bin`, and the
    /// contents of its text files).
    pub fn new(model_dir: &Path, bin: &Path, texts: &[&[u8]], policy: &WeightCache) -> Plan {
        let candidates = policy.candidates(model_dir);
        if candidates.is_empty() {
            return Plan::Unused;
        }
        // An unreadable model.bin: the load itself says what is wrong with it.
        let Ok(source) = Source::of(bin, texts) else {
            return Plan::Unused;
        };
        let mut notes = Vec::new();
        for path in &candidates {
            match Cache::open(path, &source) {
                Ok(Some(cache)) => return Plan::Map { cache, source },
                Ok(None) => {}
                Err(why) => notes.push(format!("{} not used: {why}", path.display())),
            }
        }
        Plan::Write {
            candidates,
            source,
            notes,
        }
    }

    /// A writer at the first candidate that takes one, and what happened for the outcome.
    pub fn writer(candidates: &[PathBuf], notes: &mut Vec<String>) -> Option<Writer> {
        candidates.iter().find_map(|path| match Writer::create(path) {
            Ok(w) => Some(w),
            Err(e) => {
                notes.push(format!("cannot write {}: {e}", path.display()));
                None
            }
        })
    }
}
