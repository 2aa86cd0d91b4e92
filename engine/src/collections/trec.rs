//! TREC SGML documents (`<DOC><DOCNO>id</DOCNO>text</DOC>`) and topics
//! (`<top><num>id</num><title>text</title></top>`).

use std::path::Path;

use super::{squash, Document, Query};
use crate::error::{EngineError, Result};

/// Reads every `<DOC>` block; the text is everything but the `<DOCNO>` element.
pub(super) fn read_documents(path: &Path) -> Result<Vec<Document>> {
    let text = super::smart::read_latin1(path)?;
    blocks(&text, "DOC", path)?
        .into_iter()
        .map(|(line, body)| {
            let (id, rest) = element(body, "DOCNO", line, path)?;
            Ok(Document { id: squash(id), title: String::new(), text: squash(&rest) })
        })
        .collect()
}

/// Reads every `<top>` block: the id from `<num>`, the text from `<title>`.
pub(super) fn read_queries(path: &Path) -> Result<Vec<Query>> {
    let text = super::smart::read_latin1(path)?;
    blocks(&text, "top", path)?
        .into_iter()
        .map(|(line, body)| {
            let (id, _) = element(body, "num", line, path)?;
            let (title, _) = element(body, "title", line, path)?;
            Ok(Query { id: squash(id), text: squash(title) })
        })
        .collect()
}

/// The bodies of the `<tag>...</tag>` blocks, each with the line number of its start.
fn blocks<'t>(text: &'t str, tag: &str, path: &Path) -> Result<Vec<(usize, &'t str)>> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text;
    // The line number where `rest` starts.
    let mut line_of_rest = 1;
    while let Some(start) = rest.find(&open) {
        let line = line_of_rest + rest[..start].matches('\n').count();
        let body_start = start + open.len();
        let Some(len) = rest[body_start..].find(&close) else {
            return Err(EngineError::BadInput {
                path: path.to_path_buf(),
                problem: format!("line {line}: `{open}` is never closed"),
            });
        };
        out.push((line, &rest[body_start..body_start + len]));
        let end = body_start + len + close.len();
        line_of_rest += rest[..end].matches('\n').count();
        rest = &rest[end..];
    }
    Ok(out)
}

/// The content of the first `<tag>...</tag>` element in `body`, and `body` without it.
fn element<'b>(body: &'b str, tag: &str, line: usize, path: &Path) -> Result<(&'b str, String)> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let found = body.find(&open).and_then(|s| {
        let from = s + open.len();
        body[from..].find(&close).map(|len| (s, from, from + len))
    });
    let Some((start, from, to)) = found else {
        return Err(EngineError::BadInput {
            path: path.to_path_buf(),
            problem: format!("line {line}: the block starting here has no `{open}...{close}` element"),
        });
    };
    let rest = format!("{} {}", &body[..start], &body[to + close.len()..]);
    Ok((&body[from..to], rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_blocks_and_elements() {
        let text = "<DOC>\n<DOCNO>1</DOCNO>\nfirst\ndoc\n</DOC>\n<DOC>\n<DOCNO> 2 </DOCNO>\n</DOC>\n";
        let b = blocks(text, "DOC", Path::new("d")).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].0, 6);
        let (id, rest) = element(b[0].1, "DOCNO", b[0].0, Path::new("d")).unwrap();
        assert_eq!((id, squash(&rest).as_str()), ("1", "first doc"));
        let err = blocks("x\n<DOC>\nno end", "DOC", Path::new("d")).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("never closed"), "{err}");
        let err = element("text", "num", 7, Path::new("q")).unwrap_err().to_string();
        assert!(err.contains("line 7") && err.contains("<num>"), "{err}");
    }
}
