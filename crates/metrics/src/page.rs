//! The status page at `/`: one self-contained HTML document (inline CSS and
//! script, no external assets) that fetches `/status` every 2 s and draws
//! services, backends and VRRP instances. Drain/enable buttons appear only
//! when the endpoint accepts mutations; with a token the page asks for it and
//! keeps it in the page's memory, never in storage.

const TEMPLATE: &str = include_str!("page/status.html");

/// The page for an endpoint whose access rule is `mode`
/// (`loopback`, `token` or `readonly`).
pub(crate) fn render(mode: &'static str) -> String {
    TEMPLATE.replacen("{ACCESS}", mode, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_access_mode_and_loads_nothing_from_elsewhere() {
        let page = render("readonly");
        assert!(page.contains(r#"<html lang="en" data-access="readonly">"#));
        for external in ["http://", "https://", "src=", "<link"] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(page.len() < 16 * 1024, "small: {} bytes", page.len());
    }
}
