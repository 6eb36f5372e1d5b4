//! Static files: nginx's `root`, `index` and `try_files`, served by
//! tower-http's `ServeFile` (content types, HEAD, conditional GET, ranges).

use super::response::{Body, status};
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty};
use std::path::{Path, PathBuf};
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// Serves request `path` from `root` following `try_files` (nginx: each
/// candidate but the last is tried as a file, or as a directory with an
/// index when it ends in `/`; the last is the fallback URI or `=CODE`).
pub async fn serve(
    parts: Parts,
    path: &str,
    root: &Path,
    index: &[String],
    try_files: &[String],
) -> Response<Body> {
    let Some(decoded) = decode(path) else {
        return status(400, "bad request path");
    };
    if try_files.is_empty() {
        return serve_uri(parts, root, &decoded, index, true)
            .await
            .unwrap_or_else(|| status(404, ""));
    }
    let (fallback, candidates) = match try_files.split_last() {
        Some((last, rest)) if !rest.is_empty() => (Some(last), rest),
        _ => (None, try_files),
    };
    for candidate in candidates {
        let uri = candidate.replace("$uri", &decoded);
        if let Some(file) = find(root, &uri, index).await {
            return send(parts, file).await;
        }
    }
    match fallback {
        Some(code) if code.starts_with('=') => status(code[1..].parse().unwrap_or(404), ""),
        Some(uri) => {
            let uri = uri.replace("$uri", &decoded);
            match find(root, &uri, index).await {
                Some(file) => send(parts, file).await,
                None => status(404, ""),
            }
        }
        None => status(404, ""),
    }
}

/// nginx without `try_files`: the file, or for a directory its index (and a
/// 301 adding the slash when the request lacked it).
async fn serve_uri(
    parts: Parts,
    root: &Path,
    uri: &str,
    index: &[String],
    redirect_dirs: bool,
) -> Option<Response<Body>> {
    let full = resolve(root, uri)?;
    let meta = tokio::fs::metadata(&full).await.ok()?;
    if meta.is_file() {
        return Some(send(parts, full).await);
    }
    if !uri.ends_with('/') && redirect_dirs {
        let mut response = status(301, "");
        let location = format!("{}/", parts.uri.path());
        response
            .headers_mut()
            .insert(header::LOCATION, location.parse().ok()?);
        return Some(response);
    }
    let file = find(root, &format!("{}/", uri.trim_end_matches('/')), index).await?;
    Some(send(parts, file).await)
}

/// The file a `try_files` candidate names, if it exists.
async fn find(root: &Path, uri: &str, index: &[String]) -> Option<PathBuf> {
    let full = resolve(root, uri)?;
    if uri.ends_with('/') {
        for name in index {
            let candidate = full.join(name);
            if is_file(&candidate).await {
                return Some(candidate);
            }
        }
        None
    } else {
        is_file(&full).await.then_some(full)
    }
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

async fn send(parts: Parts, file: PathBuf) -> Response<Body> {
    let request = Request::from_parts(parts, Empty::<Bytes>::new());
    match ServeFile::new(file).oneshot(request).await {
        Ok(response) => response.map(|body| body.map_err(Into::into).boxed_unsync()),
        Err(never) => match never {},
    }
}

/// Percent-decodes a request path; `None` if it is not valid UTF-8 or holds a NUL.
fn decode(path: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    (!decoded.contains('\0')).then(|| decoded.into_owned())
}

/// Joins `uri` under `root`, resolving `.` and `..` lexically; `None` when
/// `..` would climb above the root (a traversal attempt).
fn resolve(root: &Path, uri: &str) -> Option<PathBuf> {
    let mut parts: Vec<&str> = Vec::new();
    for segment in uri.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    let mut full = root.to_path_buf();
    full.extend(parts);
    Some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_above_the_root_is_refused() {
        let root = Path::new("/srv/www");
        assert_eq!(
            resolve(root, "/a/../b.html"),
            Some(PathBuf::from("/srv/www/b.html"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../etc/passwd"), None);
        assert_eq!(decode("/%2e%2e/x").as_deref(), Some("/../x"));
        assert_eq!(decode("/a%00b"), None);
    }
}
