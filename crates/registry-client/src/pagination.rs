//! `_catalog` and `tags/list`, page by page, exactly as the `Link` header says.
//!
//! Registries disagree on what `last` holds (a name, an opaque cursor) and on whether the
//! link is relative or absolute, so the client never builds the next URL itself while
//! there is a link: it follows `rel="next"` (RFC 8288) resolved against the page's own URL,
//! refuses a link that leaves the registry, and stops on a URL it has already fetched.
//! A listing cut short says so (`complete: false` and the error) instead of passing for
//! the whole: the scanner must not remove tags it did not see.
//!
//! A registry is not trusted to end a listing, nor to make it finite:
//! - a full page (exactly `n` entries) without a `Link` may be a registry that forgot
//!   the header; one more request, `?n=<n>&last=<last entry>`, confirms the end (if it
//!   brings new entries, paging goes on);
//! - pages, entries and bytes are capped ([`crate::RegistryConfig`]): an endless chain of
//!   links or a listing of millions ends incomplete with a [`Cap`] error;
//! - an entry seen twice counts once.

use std::collections::HashSet;

use imagelib_events::{RepositoryName, Tag};
use reqwest::Method;
use reqwest::header::{HeaderMap, LINK};
use serde::Deserialize;
use url::Url;

use crate::auth::Scope;
use crate::client::RegistryClient;
use crate::error::{Cap, Error, Result};

/// What a listing saw.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// False when a page after the first failed, a cap was reached or a loop was cut;
    /// `error` says why.
    pub complete: bool,
    pub pages: u32,
    /// Entries that are not valid names or tags, left out of `items` (at most 100 kept).
    pub skipped: Vec<String>,
    pub error: Option<Error>,
}

impl<T> Listing<T> {
    /// The items if the listing is complete, the error otherwise.
    pub fn into_complete(self) -> Result<Vec<T>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.items),
        }
    }
}

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

const MAX_SKIPPED_KEPT: usize = 100;

/// What to fetch next.
enum Next {
    /// The registry's `Link`.
    Link(Url),
    /// Our own `last=` request after a full page without a link.
    Confirm(Url),
}

impl RegistryClient {
    /// Every repository in `_catalog`, limited to the registry URL's namespace if it has one.
    pub async fn catalog(&self) -> Result<Listing<RepositoryName>> {
        let url = self.first_page("v2/_catalog");
        let mut listing = self
            .paginate(url, &Scope::Catalog, |body| {
                serde_json::from_slice::<CatalogPage>(body)
                    .map(|p| p.repositories.unwrap_or_default())
            })
            .await?;
        if let Some(ns) = self.config().url.namespace() {
            listing.items.retain(|name: &RepositoryName| {
                name.as_str() == ns
                    || name
                        .as_str()
                        .strip_prefix(ns)
                        .is_some_and(|rest| rest.starts_with('/'))
            });
        }
        Ok(listing)
    }

    /// Every tag of `repository`.
    pub async fn tags(&self, repository: &RepositoryName) -> Result<Listing<Tag>> {
        let url = self.first_page(&format!("v2/{repository}/tags/list"));
        self.paginate(url, &Scope::Pull(repository.to_string()), |body| {
            serde_json::from_slice::<TagsPage>(body).map(|p| p.tags.unwrap_or_default())
        })
        .await
    }

    fn first_page(&self, path: &str) -> Url {
        let mut url = self.t().url(path);
        if self.config().page_size > 0 {
            url.query_pairs_mut()
                .append_pair("n", &self.config().page_size.to_string());
        }
        url
    }

    async fn paginate<T: std::str::FromStr>(
        &self,
        first: Url,
        scope: &Scope,
        extract: impl Fn(&[u8]) -> serde_json::Result<Vec<String>>,
    ) -> Result<Listing<T>> {
        let t = self.t();
        let config = self.config();
        let page_size = u64::from(config.page_size);
        let mut listing = Listing {
            items: Vec::new(),
            complete: false,
            pages: 0,
            skipped: Vec::new(),
            error: None,
        };
        let mut fetched = HashSet::new();
        let mut names_seen: HashSet<String> = HashSet::new();
        let mut entries: u64 = 0;
        let mut bytes: u64 = 0;
        let mut next = Some(Next::Link(first.clone()));
        while let Some(step_to) = next.take() {
            let (url, confirming) = match step_to {
                Next::Link(url) => (url, false),
                Next::Confirm(url) => (url, true),
            };
            let step = async {
                if !fetched.insert(url.to_string()) {
                    return Err(Error::protocol(
                        &url,
                        "pagination loop: the Link header points at a page already fetched",
                    ));
                }
                if listing.pages >= config.max_pages {
                    return Err(Error::Capped {
                        url: url.to_string(),
                        cap: Cap::ListingPages,
                        limit: u64::from(config.max_pages),
                    });
                }
                let page_cap = config
                    .max_page_bytes
                    .min(config.max_listing_bytes.saturating_sub(bytes))
                    .max(1);
                let reply = t
                    .execute(
                        Method::GET,
                        url.clone(),
                        scope,
                        Some("application/json"),
                        page_cap,
                    )
                    .await
                    .map_err(|e| e.into_cap(Cap::ListingBytes))?;
                if !reply.status.is_success() {
                    return Err(reply.status_error());
                }
                let names = extract(&reply.body).map_err(|e| {
                    Error::protocol(&reply.url, format!("the page is not valid JSON: {e}"))
                })?;
                let link = next_link(&reply.headers, &reply.url)
                    .map_err(|reason| Error::protocol(&reply.url, reason))
                    .and_then(|link| match link {
                        Some(link) if link.origin() != t.base.origin() => Err(Error::protocol(
                            &reply.url,
                            format!("the next page {link} is not on the registry"),
                        )),
                        link => Ok(link),
                    });
                Ok((names, link, reply.body.len() as u64))
            };
            let link =
                match step.await {
                    Ok((names, link, size)) => {
                        listing.pages += 1;
                        bytes = bytes.saturating_add(size);
                        let full = page_size > 0 && names.len() as u64 >= page_size;
                        let last = names.last().cloned();
                        let mut new = 0u64;
                        let mut capped = None;
                        for name in names {
                            if names_seen.contains(&name) {
                                continue;
                            }
                            if entries >= config.max_listing_items {
                                capped = Some(Error::Capped {
                                    url: url.to_string(),
                                    cap: Cap::ListingItems,
                                    limit: config.max_listing_items,
                                });
                                break;
                            }
                            entries += 1;
                            new += 1;
                            match name.parse::<T>() {
                                Ok(item) => listing.items.push(item),
                                Err(_) if listing.skipped.len() < MAX_SKIPPED_KEPT => {
                                    listing.skipped.push(name.clone())
                                }
                                Err(_) => {}
                            }
                            names_seen.insert(name);
                        }
                        match (capped, link) {
                            (Some(e), _) => Err(e),
                            // The confirmation brought nothing new (an empty page, or a registry
                            // that ignores `last` and starts over): the listing ends here.
                            (None, _) if confirming && new == 0 => Ok(None),
                            (None, Err(e)) => Err(e),
                            (None, Ok(Some(link))) => Ok(Some(Next::Link(link))),
                            (None, Ok(None)) if full => Ok(last
                                .map(|last| Next::Confirm(confirm_url(&first, page_size, &last)))),
                            (None, Ok(None)) => Ok(None),
                        }
                    }
                    Err(e) if listing.pages == 0 => return Err(e),
                    Err(e) => Err(e),
                };
            match link {
                Ok(link) => next = link,
                Err(e) => {
                    tracing::warn!(error = %e, pages = listing.pages, "listing cut short");
                    listing.error = Some(e);
                    return Ok(listing);
                }
            }
        }
        listing.complete = true;
        Ok(listing)
    }
}

/// `first` with its query replaced by `n=<n>&last=<last>`.
fn confirm_url(first: &Url, n: u64, last: &str) -> Url {
    let mut url = first.clone();
    url.set_query(None);
    url.query_pairs_mut()
        .append_pair("n", &n.to_string())
        .append_pair("last", last);
    url
}

/// The `rel="next"` target of the `Link` headers, resolved against `base`.
pub fn next_link(headers: &HeaderMap, base: &Url) -> Result<Option<Url>, String> {
    for value in headers.get_all(LINK) {
        let value = value
            .to_str()
            .map_err(|_| "the Link header is not ASCII".to_owned())?;
        for link in parse_link_header(value) {
            let is_next = link.params.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("rel")
                    && v.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return base
                    .join(&link.target)
                    .map(Some)
                    .map_err(|e| format!("the next link `{}` is not a URL: {e}", link.target));
            }
        }
    }
    Ok(None)
}

/// One link-value of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkValue {
    pub target: String,
    pub params: Vec<(String, String)>,
}

/// Parses RFC 8288 `Link`: `<uri>; param=value; param="quoted, value", <uri2>; …`.
pub fn parse_link_header(value: &str) -> Vec<LinkValue> {
    let b = value.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i >= b.len() || b[i] != b'<' {
            break;
        }
        let start = i + 1;
        let Some(len) = value[start..].find('>') else {
            break;
        };
        let mut link = LinkValue {
            target: value[start..start + len].trim().to_owned(),
            params: Vec::new(),
        };
        i = start + len + 1;
        loop {
            skip_ws(&mut i);
            if i >= b.len() || b[i] != b';' {
                break;
            }
            i += 1;
            skip_ws(&mut i);
            let name_start = i;
            while i < b.len() && !matches!(b[i], b'=' | b';' | b',' | b' ' | b'\t') {
                i += 1;
            }
            let name = value[name_start..i].to_owned();
            skip_ws(&mut i);
            let mut param_value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                skip_ws(&mut i);
                if i < b.len() && b[i] == b'"' {
                    i += 1;
                    let mut v = Vec::new();
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' && i + 1 < b.len() {
                            i += 1;
                        }
                        v.push(b[i]);
                        i += 1;
                    }
                    i += 1;
                    param_value = String::from_utf8_lossy(&v).into_owned();
                } else {
                    let s = i;
                    while i < b.len() && !matches!(b[i], b';' | b',') {
                        i += 1;
                    }
                    param_value = value[s..i].trim().to_owned();
                }
            }
            if !name.is_empty() {
                link.params.push((name, param_value));
            }
        }
        out.push(link);
        while i < b.len() && b[i] != b',' {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(LINK, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn relative_and_absolute_next_links() {
        let base: Url = "https://r.example:5000/v2/_catalog?n=100".parse().unwrap();
        let next = next_link(
            &headers(&[r#"</v2/_catalog?last=b&n=100>; rel="next""#]),
            &base,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            next.as_str(),
            "https://r.example:5000/v2/_catalog?last=b&n=100"
        );

        let next = next_link(
            &headers(&[r#"<https://r.example:5000/v2/a/tags/list?n=2&last=opaque%2Bcursor%3D%3D>;rel=next"#]),
            &base,
        )
        .unwrap()
        .unwrap();
        assert_eq!(next.query(), Some("n=2&last=opaque%2Bcursor%3D%3D"));

        let next = next_link(&headers(&["<page2>; rel=\"next\""]), &base)
            .unwrap()
            .unwrap();
        assert_eq!(next.as_str(), "https://r.example:5000/v2/page2");
    }

    #[test]
    fn picks_next_among_several_links_and_rel_lists() {
        let base: Url = "https://r.example/v2/x/tags/list".parse().unwrap();
        let h = headers(&[
            r#"</v2/x/tags/list?p=1>; rel="prev"; title="a, b", </v2/x/tags/list?p=3>; rel="last next""#,
        ]);
        assert_eq!(next_link(&h, &base).unwrap().unwrap().query(), Some("p=3"));
        let h = headers(&[r#"</a>; rel="prev""#, r#"</b>; REL=NEXT"#]);
        assert_eq!(next_link(&h, &base).unwrap().unwrap().path(), "/b");
        assert_eq!(
            next_link(&headers(&[r#"</a>; rel="prev""#]), &base).unwrap(),
            None
        );
        assert_eq!(next_link(&HeaderMap::new(), &base).unwrap(), None);
    }

    #[test]
    fn parses_params_with_quotes_and_commas() {
        let links = parse_link_header(r#"<u1>; rel="next"; title="x, \"y\"", <u2>; anchor=z"#);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].target, "u1");
        assert_eq!(links[0].params[1], ("title".into(), r#"x, "y""#.into()));
        assert_eq!(links[1].params[0], ("anchor".into(), "z".into()));
    }
}
