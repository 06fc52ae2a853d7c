//! The watcher's web page, embedded in the binary (no CDN, no build step).
//!
//! The page is `index.html`, `style.css` and three ES modules: `app.js` (the entry point: the
//! match picker and the routing), `watch.js` (following a match over the WebSocket) and
//! `view.js` (what the page draws), loaded by the browser through their `import`s.

/// The content type of the page's scripts.
const JS: &str = "text/javascript; charset=utf-8";

/// The content type and bytes of the page asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            include_bytes!("../../web/index.html"),
        )),
        "/app.js" => Some((JS, include_bytes!("../../web/app.js"))),
        "/watch.js" => Some((JS, include_bytes!("../../web/watch.js"))),
        "/view.js" => Some((JS, include_bytes!("../../web/view.js"))),
        "/style.css" => Some((
            "text/css; charset=utf-8",
            include_bytes!("../../web/style.css"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::asset;

    /// The absolute paths quoted after `marker` in `text` (`src="/app.js"` → `/app.js`).
    fn quoted_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.split(marker)
            .skip(1)
            .filter_map(|rest| rest.split(['"', '\'']).next())
            .collect()
    }

    fn text(path: &str) -> &'static str {
        let (_, bytes) = asset(path).unwrap_or_else(|| panic!("{path} is not served"));
        std::str::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn every_file_the_page_loads_is_served_with_its_type() {
        let html = text("/index.html");
        let mut files = quoted_after(html, "src=\"/");
        files.extend(quoted_after(html, "href=\"/"));
        for file in &files {
            assert!(
                asset(&format!("/{file}")).is_some(),
                "/{file} is not served"
            );
        }
        assert!(files.contains(&"style.css"), "{files:?}");
        // The scripts, and each module's own imports (`from './view.js'`), followed to the end.
        let mut scripts: Vec<&str> = files.into_iter().filter(|f| f.ends_with(".js")).collect();
        let mut seen = vec![];
        while let Some(file) = scripts.pop() {
            if seen.contains(&file) {
                continue;
            }
            let (content_type, _) = asset(&format!("/{file}")).expect("checked above or below");
            assert_eq!(content_type, "text/javascript; charset=utf-8", "{file}");
            for import in quoted_after(text(&format!("/{file}")), "from './") {
                assert!(
                    asset(&format!("/{import}")).is_some(),
                    "{file} imports {import}"
                );
                scripts.push(import);
            }
            seen.push(file);
        }
        seen.sort_unstable();
        assert_eq!(seen, ["app.js", "view.js", "watch.js"]);
    }

    #[test]
    fn other_paths_are_not_page_assets() {
        assert!(asset("/nope.js").is_none());
        assert!(asset("/web/app.js").is_none());
    }
}
