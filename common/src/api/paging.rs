//! One way to page through a listing, with one cap on pages.

use std::future::Future;

use super::error::CollectError;

/// Pages per listing at most, unless `aws.max_pages` says otherwise: far above any
/// real account (100,000 ECR images of 1,000-entry pages, 110,000 SSM parameters of
/// 50), so a server that keeps returning tokens ends the refresh with an error instead
/// of running forever.
pub const MAX_PAGES: usize = 20_000;

tokio::task_local! {
    /// The cap in force for the task running a collector's refreshes (its `aws:`
    /// settings); `MAX_PAGES` outside one.
    static PAGE_CAP: usize;
}

/// Runs `fut` with `cap` pages per listing at most.
pub(crate) async fn with_page_cap<F: Future>(cap: usize, fut: F) -> F::Output {
    PAGE_CAP.scope(cap, fut).await
}

fn page_cap() -> usize {
    PAGE_CAP.try_with(|cap| *cap).unwrap_or(MAX_PAGES)
}

/// Sends `request(token)` for each page, starting without a token, and hands each page
/// to `read`, which returns the page's next token. Paging ends at a missing or empty
/// token; pages may be short, even empty, and still carry one. Nothing is returned
/// until the last page is read, so a caller that counts as pages arrive reports no
/// partial count.
pub async fn pages<P, F, Fut>(
    operation: &str,
    mut request: F,
    mut read: impl FnMut(P) -> Result<Option<String>, CollectError>,
) -> Result<(), CollectError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<P, CollectError>>,
{
    let cap = page_cap();
    let mut token = None;
    for _ in 0..cap {
        let page = request(token.take()).await?;
        match read(page)? {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(()),
        }
    }
    Err(CollectError::malformed(
        operation,
        format!("still paging after {cap} pages"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_tokens_through_short_and_empty_pages() {
        // Pages of 3, 0 and 2 items, the first two with a token.
        let book = [(3, Some("a")), (0, Some("b")), (2, None)];
        let mut seen = Vec::new();
        let mut count = 0;
        pages(
            "Op",
            |token: Option<String>| {
                seen.push(token.clone());
                let i = match token.as_deref() {
                    None => 0,
                    Some("a") => 1,
                    _ => 2,
                };
                async move { Ok::<_, CollectError>(book[i]) }
            },
            |(n, next)| {
                count += n;
                Ok(next.map(String::from))
            },
        )
        .await
        .expect("paged");
        assert_eq!(count, 5);
        assert_eq!(seen, [None, Some("a".into()), Some("b".into())]);
    }

    /// Pages of a server that always hands out a token: the calls made and the error.
    async fn endless() -> (usize, CollectError) {
        let mut calls = 0;
        let e = pages(
            "ListThings",
            |_| {
                calls += 1;
                async { Ok::<_, CollectError>(()) }
            },
            |()| Ok(Some("again".into())),
        )
        .await
        .expect_err("endless");
        (calls, e)
    }

    #[tokio::test]
    async fn a_server_that_never_stops_is_an_error() {
        let (calls, e) = endless().await;
        assert_eq!(calls, MAX_PAGES);
        assert_eq!(e.code, "malformed_response");
        assert!(e.message.contains("still paging"), "{e}");
    }

    #[tokio::test]
    async fn the_cap_in_force_is_the_tasks() {
        let (calls, e) = with_page_cap(7, endless()).await;
        assert_eq!(calls, 7);
        assert!(e.message.contains("still paging after 7 pages"), "{e}");
    }
}
