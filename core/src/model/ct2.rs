//! Reader for CTranslate2's `model.bin` (binary version ≤ 6): a list of named tensors and aliases.
//! Every read is bounds-checked, so a truncated or corrupt file is an error, never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;

use half::{bf16, f16};

/// Longest name and highest rank accepted: real ones are far below, and a corrupt length must
/// not turn the error messages that quote them into dumps of the file.
const MAX_NAME: usize = 256;
const MAX_RANK: usize = 8;
/// Values decoded per read of the file: the raw bytes in memory at once stay below 1 MiB.
const READ_CHUNK: usize = 1 << 18;

/// Where a tensor is in the file; its values are read when asked for, so the loader never
/// holds more than the tensor it is converting (the file is not mapped either: mapped pages
/// would count in the resident set).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    dtype: u8,
    offset: u64,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct ModelBin {
    pub spec: String,
    pub tensors: HashMap<String, Tensor>,
    pub aliases: HashMap<String, String>,
    file: File,
}

impl ModelBin {
    /// Names of the tensors and aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().chain(self.aliases.keys()).map(String::as_str)
    }

    /// The tensor a name or alias stands for, with its own name.
    pub fn resolve(&self, name: &str) -> Option<(&str, &Tensor)> {
        if let Some((k, t)) = self.tensors.get_key_value(name) {
            return Some((k.as_str(), t));
        }
        let target = self.aliases.get(name)?;
        self.tensors
            .get_key_value(target.as_str())
            .map(|(k, t)| (k.as_str(), t))
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.resolve(name).map(|(_, t)| t)
    }

    /// Decodes values `start .. start + out.len()` of `t` (named `name` in errors) to f32.
    /// Integer dtypes hold scalars (flags, head counts). NaN and infinities are errors.
    pub fn read_into(&self, name: &str, t: &Tensor, start: usize, out: &mut [f32]) -> Result<(), String> {
        assert!(
            start + out.len() <= t.len(),
            "read_into: values {start}.. past the tensor's {}",
            t.len()
        );
        let elem = dtype_size(t.dtype).expect("checked when indexed");
        let mut raw = vec![0u8; out.len().min(READ_CHUNK) * elem];
        for (i, out) in out.chunks_mut(READ_CHUNK).enumerate() {
            let raw = &mut raw[..out.len() * elem];
            let at = t.offset + ((start + i * READ_CHUNK) * elem) as u64;
            self.file
                .read_exact_at(raw, at)
                .map_err(|e| format!("cannot read tensor {name}: {e}"))?;
            decode(t.dtype, raw, out);
            if out.iter().any(|v| !v.is_finite()) {
                return Err(format!("tensor {name} holds NaN or infinite values"));
            }
        }
        Ok(())
    }

    /// All of a tensor's values as f32.
    pub fn read(&self, name: &str, t: &Tensor) -> Result<Vec<f32>, String> {
        let mut out = vec![0f32; t.len()];
        self.read_into(name, t, 0, &mut out)?;
        Ok(out)
    }
}

/// Sequential reader of the tensor table, skipping over the data.
struct Reader {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn check(&self, n: usize, what: &str) -> Result<(), String> {
        if self.pos.checked_add(n as u64).is_none_or(|e| e > self.len) {
            return Err(format!(
                "truncated: needs {n} more bytes for {what} at offset {}, file has {}",
                self.pos, self.len
            ));
        }
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        self.check(n, what)?;
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("cannot read {what} at offset {}: {e}", self.pos))?;
        self.pos += n as u64;
        Ok(buf)
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), String> {
        self.check(n, what)?;
        self.inner
            .seek_relative(n as i64)
            .map_err(|e| format!("cannot skip {what} at offset {}: {e}", self.pos))?;
        self.pos += n as u64;
        Ok(())
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    /// u16 length (including a trailing NUL), then the bytes.
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u16(what)? as usize;
        if len > MAX_NAME {
            return Err(format!(
                "{what} at offset {} is {len} bytes long, more than any CTranslate2 name",
                self.pos - 2
            ));
        }
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8 at offset {}", self.pos))
    }
}

/// Decodes one run of a tensor's bytes to f32.
fn decode(dtype: u8, raw: &[u8], out: &mut [f32]) {
    match dtype {
        0 => raw
            .chunks_exact(4)
            .zip(out)
            .for_each(|(c, o)| *o = f32::from_le_bytes(c.try_into().unwrap())),
        1 => raw.iter().zip(out).for_each(|(&b, o)| *o = b as i8 as f32),
        2 => raw
            .chunks_exact(2)
            .zip(out)
            .for_each(|(c, o)| *o = i16::from_le_bytes(c.try_into().unwrap()) as f32),
        3 => raw
            .chunks_exact(4)
            .zip(out)
            .for_each(|(c, o)| *o = i32::from_le_bytes(c.try_into().unwrap()) as f32),
        4 => raw
            .chunks_exact(2)
            .zip(out)
            .for_each(|(c, o)| *o = f16::from_le_bytes(c.try_into().unwrap()).to_f32()),
        5 => raw
            .chunks_exact(2)
            .zip(out)
            .for_each(|(c, o)| *o = bf16::from_le_bytes(c.try_into().unwrap()).to_f32()),
        other => unreachable!("dtype {other} was checked when indexed"),
    }
}

fn dtype_size(dtype: u8) -> Option<usize> {
    match dtype {
        0 | 3 => Some(4),
        1 => Some(1),
        2 | 4 | 5 => Some(2),
        _ => None,
    }
}

/// Reads the tensor table of an open `model.bin`: names, shapes and where the data is.
pub fn parse(file: File) -> Result<ModelBin, String> {
    let len = file.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len,
    };
    let version = r.u32("binary version")?;
    if !(1..=6).contains(&version) {
        return Err(format!(
            "unsupported binary version {version} (expected 1 to 6; not a CTranslate2 model?)"
        ));
    }
    let spec = if version >= 2 {
        r.string("spec name")?
    } else {
        String::new()
    };
    if version >= 2 {
        r.u32("spec revision")?;
    }
    let n_vars = r.u32("variable count")? as usize;
    let mut tensors = HashMap::new();
    for i in 0..n_vars {
        let name = r.string(&format!("name of variable {i}"))?;
        let rank = r.u8(&format!("rank of {name}"))? as usize;
        if rank > MAX_RANK {
            return Err(format!("tensor {name} has rank {rank}, more than {MAX_RANK}"));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u32(&format!("shape of {name}"))? as usize);
        }
        let dtype = r.u8(&format!("dtype of {name}"))?;
        let n_bytes = if version >= 4 {
            r.u32(&format!("size of {name}"))? as usize
        } else {
            0
        };
        let elem = dtype_size(dtype).ok_or_else(|| format!("tensor {name} has unknown dtype id {dtype}"))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor {name}: shape overflows"))?;
        let expect = count
            .checked_mul(elem)
            .ok_or_else(|| format!("tensor {name}: size overflows"))?;
        if version >= 4 && n_bytes != expect {
            return Err(format!(
                "tensor {name}: shape {shape:?} needs {expect} bytes, file says {n_bytes}"
            ));
        }
        let offset = r.pos;
        r.skip(expect, &format!("data of {name}"))?;
        tensors.insert(name, Tensor { shape, dtype, offset });
    }
    let mut aliases = HashMap::new();
    if version >= 3 {
        let n_aliases = r.u32("alias count")?;
        for _ in 0..n_aliases {
            let alias = r.string("alias name")?;
            let target = r.string("alias target")?;
            aliases.insert(alias, target);
        }
    }
    if r.pos != len {
        return Err(format!("{} unexpected bytes after the last entry", len - r.pos));
    }
    Ok(ModelBin {
        spec,
        tensors,
        aliases,
        file: r.inner.into_inner(),
    })
}
