//! The watcher's web page, embedded in the binary (no CDN, no build step).

/// The content type and bytes of the page asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            include_bytes!("../../web/index.html"),
        )),
        "/app.js" => Some((
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/app.js"),
        )),
        "/style.css" => Some((
            "text/css; charset=utf-8",
            include_bytes!("../../web/style.css"),
        )),
        _ => None,
    }
}
