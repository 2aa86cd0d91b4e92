//! Opening (cheap checks) and verifying (every checksum) an index.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;

use crate::bytes::{map_file, Bytes, Plain};
use crate::component::Component;
use crate::error::{FormatError, Result};
use crate::footer::Footer;
use crate::meta::{IndexKind, IndexMeta};
use crate::version::{FormatVersion, FORMAT_VERSION, OLDEST_SUPPORTED_VERSION};

struct Mapped {
    payload: Bytes,
    footer: Footer,
}

/// A memory-mapped index. Opening maps every file and checks footers, versions and sizes; the
/// payloads are then used in place.
pub struct IndexReader {
    dir: PathBuf,
    meta: IndexMeta,
    files: HashMap<Component, Mapped>,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader").field("dir", &self.dir).field("meta", &self.meta).finish()
    }
}

fn map_component(dir: &Path, component: Component) -> Result<Mapped> {
    let path = dir.join(component.file_name());
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FormatError::Missing { path }),
        Err(e) => return Err(FormatError::io(&path, e)),
    };
    let len = file.metadata().map_err(|e| FormatError::io(&path, e))?.len();
    if len == 0 {
        return Err(FormatError::Truncated { path, detail: "empty file".into() });
    }
    let bytes = Bytes::from_mmap(map_file(&file).map_err(|e| FormatError::io(&path, e))?);
    let (payload_len, footer) = {
        let (payload, footer) = Footer::split(&path, &bytes, component.id())?;
        (payload.len(), footer)
    };
    let payload = bytes.slice(0..payload_len).expect("payload is a prefix of the file");
    if payload_len % component.element_size() != 0 {
        return Err(FormatError::corrupt(
            &path,
            format!(
                "{payload_len} bytes is not a whole number of {}-byte elements",
                component.element_size()
            ),
        ));
    }
    Ok(Mapped { payload, footer })
}

impl IndexReader {
    /// Opens the index in `dir`, checking footers, versions and that the array sizes agree with
    /// the metadata. Does not read the payloads (see [`IndexReader::verify`]).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(if dir.exists() {
                FormatError::corrupt(dir, "not a directory")
            } else {
                FormatError::Missing { path: dir.to_path_buf() }
            });
        }
        let meta_file = map_component(dir, Component::Meta)?;
        let meta_path = dir.join(Component::Meta.file_name());
        meta_file.footer.check_crc(&meta_path, &meta_file.payload)?;
        let meta: IndexMeta = serde_json::from_slice(&meta_file.payload)
            .map_err(|e| FormatError::corrupt(&meta_path, format!("invalid metadata: {e}")))?;
        if FormatVersion::from_u32(meta.format_version).is_none() {
            return Err(FormatError::UnsupportedVersion {
                path: meta_path,
                found: meta.format_version,
                oldest: OLDEST_SUPPORTED_VERSION,
                newest: FORMAT_VERSION,
            });
        }
        let mut files = HashMap::new();
        files.insert(Component::Meta, meta_file);
        for &c in Self::components_of(meta.kind) {
            if c != Component::Meta {
                files.insert(c, map_component(dir, c)?);
            }
        }
        let reader = Self { dir: dir.to_path_buf(), meta, files };
        reader.check_shapes()?;
        Ok(reader)
    }

    /// The components an index of `kind` consists of.
    pub fn components_of(kind: IndexKind) -> &'static [Component] {
        match kind {
            IndexKind::Uncompressed => &Component::ALL,
        }
    }

    fn path(&self, c: Component) -> PathBuf {
        self.dir.join(c.file_name())
    }

    fn typed<T: Plain>(&self, c: Component) -> Result<&[T]> {
        let m = &self.files[&c];
        m.payload.typed::<T>().ok_or_else(|| FormatError::corrupt(self.path(c), "payload is misaligned"))
    }

    fn check_len(&self, c: Component, got: usize, expected: u64) -> Result<()> {
        if got as u64 != expected {
            return Err(FormatError::corrupt(
                self.path(c),
                format!("holds {got} elements, the metadata implies {expected}"),
            ));
        }
        Ok(())
    }

    fn check_shapes(&self) -> Result<()> {
        let m = &self.meta;
        let meta_path = self.path(Component::Meta);
        if m.dim == 0 {
            return Err(FormatError::corrupt(meta_path, "dimension is 0"));
        }
        let offsets = self.typed::<u64>(Component::DocOffsets)?;
        self.check_len(Component::DocOffsets, offsets.len(), m.n_docs + 1)?;
        if offsets[0] != 0 || offsets[offsets.len() - 1] != m.n_tokens {
            return Err(FormatError::corrupt(
                self.path(Component::DocOffsets),
                format!(
                    "offsets run from {} to {}, expected 0 to {}",
                    offsets[0],
                    offsets[offsets.len() - 1],
                    m.n_tokens
                ),
            ));
        }
        let emb = self.typed::<f16>(Component::Embeddings)?;
        self.check_len(Component::Embeddings, emb.len(), m.n_tokens * m.dim as u64)?;
        let id_offsets = self.typed::<u64>(Component::DocIdOffsets)?;
        self.check_len(Component::DocIdOffsets, id_offsets.len(), m.n_docs + 1)?;
        let id_bytes = self.files[&Component::DocIdBytes].payload.len() as u64;
        if id_offsets[0] != 0 || id_offsets[id_offsets.len() - 1] != id_bytes {
            return Err(FormatError::corrupt(
                self.path(Component::DocIdOffsets),
                format!(
                    "id offsets end at {}, the id file holds {id_bytes} bytes",
                    id_offsets[id_offsets.len() - 1]
                ),
            ));
        }
        Ok(())
    }

    /// Recomputes every file's CRC32 and checks every offset array in full.
    pub fn verify(&self) -> Result<()> {
        let mut components: Vec<_> = self.files.keys().copied().collect();
        components.sort_by_key(|c| c.id());
        for c in components {
            let m = &self.files[&c];
            m.footer.check_crc(&self.path(c), &m.payload)?;
        }
        for (c, bound) in [
            (Component::DocOffsets, self.meta.n_tokens),
            (Component::DocIdOffsets, self.files[&Component::DocIdBytes].payload.len() as u64),
        ] {
            let offsets = self.typed::<u64>(c)?;
            if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1] || w[1] > bound) {
                return Err(FormatError::corrupt(
                    self.path(c),
                    format!("offsets decrease or overflow at document {i}"),
                ));
            }
        }
        if let Some(i) = self.doc_offsets().windows(2).position(|w| w[0] == w[1]) {
            return Err(FormatError::corrupt(
                self.path(Component::DocOffsets),
                format!("document {i} has no tokens"),
            ));
        }
        if let Err(e) = std::str::from_utf8(&self.files[&Component::DocIdBytes].payload) {
            return Err(FormatError::corrupt(
                self.path(Component::DocIdBytes),
                format!("invalid UTF-8: {e}"),
            ));
        }
        Ok(())
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Token offsets: document `i` owns tokens `offsets[i]..offsets[i + 1]`.
    pub fn doc_offsets(&self) -> &[u64] {
        self.typed::<u64>(Component::DocOffsets).expect("checked at open")
    }

    /// All token embeddings, row-major `n_tokens × dim`.
    pub fn embeddings(&self) -> &[f16] {
        self.typed::<f16>(Component::Embeddings).expect("checked at open")
    }

    /// The token embeddings of document `doc`, row-major.
    pub fn doc_embeddings(&self, doc: usize) -> &[f16] {
        let o = self.doc_offsets();
        let dim = self.meta.dim;
        &self.embeddings()[o[doc] as usize * dim..o[doc + 1] as usize * dim]
    }

    /// The external id of document `doc` (invalid UTF-8 is replaced; `verify` reports it).
    pub fn doc_id(&self, doc: usize) -> std::borrow::Cow<'_, str> {
        let o = self.typed::<u64>(Component::DocIdOffsets).expect("checked at open");
        let bytes = &self.files[&Component::DocIdBytes].payload;
        let (a, b) = (o[doc] as usize, o[doc + 1] as usize);
        if a > b || b > bytes.len() {
            return std::borrow::Cow::Borrowed("<corrupt id>");
        }
        String::from_utf8_lossy(&bytes[a..b])
    }

    /// Total size in bytes of the index files.
    pub fn size_bytes(&self) -> u64 {
        self.files.values().map(|m| m.payload.len() as u64 + crate::footer::FOOTER_LEN as u64).sum()
    }
}
