//! READMEs: Markdown rendered with `pulldown-cmark`, then sanitised with `ammonia`.
//!
//! A README comes from a registry or a curator: untrusted. Rendering keeps raw HTML in
//! it; the sanitiser then keeps only a list of harmless elements and attributes (no
//! `script`, `style`, event handlers, `javascript:` links, forms or frames), and drops
//! images too: the console's Content-Security-Policy loads images from itself only, and
//! an external image would be a violation on every visit.

use std::sync::OnceLock;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd, html};

fn sanitizer() -> &'static ammonia::Builder<'static> {
    static B: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    B.get_or_init(|| {
        let mut b = ammonia::Builder::default();
        b.rm_tags(["img"])
            .link_rel(Some("noopener noreferrer nofollow"))
            .url_schemes(["http", "https", "mailto"].into_iter().collect());
        b
    })
}

fn lower(level: HeadingLevel) -> HeadingLevel {
    match level {
        HeadingLevel::H1 => HeadingLevel::H2,
        HeadingLevel::H2 => HeadingLevel::H3,
        HeadingLevel::H3 => HeadingLevel::H4,
        HeadingLevel::H4 => HeadingLevel::H5,
        _ => HeadingLevel::H6,
    }
}

/// Markdown to HTML safe to insert into a page.
pub fn render(markdown: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    opts.insert(Options::ENABLE_TASKLISTS);
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    // The page has its own `h1` (the repository): a README's headings go one level down.
    let events = Parser::new_ext(markdown, opts).map(|e| match e {
        Event::Start(Tag::Heading {
            level,
            id,
            classes,
            attrs,
        }) => Event::Start(Tag::Heading {
            level: lower(level),
            id,
            classes,
            attrs,
        }),
        Event::End(TagEnd::Heading(level)) => Event::End(TagEnd::Heading(lower(level))),
        other => other,
    });
    html::push_html(&mut out, events);
    sanitizer().clean(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders() {
        let out = render("# Title\n\n*x* and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(out.contains("<h2>Title</h2>"), "{out}");
        assert!(out.contains("<em>x</em>") && out.contains("<code>code</code>"));
        assert!(out.contains("<table>"), "{out}");
    }

    #[test]
    fn hostile_html_comes_out_inert() {
        let out = render(
            "<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n\
             [a](javascript:alert(3)) <a href=\"x\" onclick=\"alert(4)\">b</a>\n\n\
             <div style=\"color:red\">s</div><iframe src=\"/\"></iframe>\
             <form action=\"/x\"><button>go</button></form>",
        );
        for bad in [
            "<script",
            "onerror",
            "javascript:",
            "onclick",
            "style=",
            "<iframe",
            "<form",
            "<img",
        ] {
            assert!(!out.contains(bad), "{bad} in {out}");
        }
        assert!(
            out.contains("rel=\"noopener noreferrer nofollow\""),
            "{out}"
        );
    }
}
