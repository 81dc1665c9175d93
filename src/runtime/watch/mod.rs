//! The ApiKey watch behind the controller's cache and the verifier's index:
//! kube's watcher events (`Init`, `InitApply`, `InitDone`, `Apply`,
//! `Delete`) from one list request read as a stream, then a watch from the
//! list's resource version.
//!
//! Why not kube's `watcher`: it lists in pages of 500, each read whole.
//! Since Kubernetes 1.34 every page is cut from the API server's watch cache
//! after collecting all the objects from the page's start to the end
//! (`btreeStore.ListPrefix`), so small pages cost the API server time
//! quadratic in the number of ApiKeys: at 100,000 that walk was a third of
//! its CPU, and the verifier's list took 13–15 s against 6.6–7.2 s in one
//! request (BENCHMARKS.md, "How keymint lists ApiKeys"). Here each page is
//! read as it arrives and cut into items ([`items`]), so a page holds one
//! piece of text and that piece's objects whatever its size, and pages can
//! be big: few walks, and each page still answers well within the API
//! server's request timeout (60 s), which one request for everything would
//! not at a few hundred thousand keys.

pub mod items;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncBufRead, AsyncBufReadExt};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{Error, Event};
use kube::{Api, Resource, ResourceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use items::{Items, ItemsError};

/// ApiKeys a page: about 9 MB of JSON, served in well under a second.
const PAGE: u32 = 10_000;

/// A page that sends nothing for this long is a dead connection: list
/// again (the API server's own request timeout is 60 s).
const STALLED: Duration = Duration::from_secs(60);

/// How long a watch runs before the API server ends it and it is resumed
/// (kube's watcher default).
const WATCH_SECONDS: u32 = 290;

/// A watch silent this much longer than [`WATCH_SECONDS`] is a dead
/// connection: resume it (as kube's watcher does).
const IDLE_MARGIN: Duration = Duration::from_secs(5);

/// Signs of life of the watch that carry no event: the verifier counts them
/// as proof that its index is current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pulse {
    /// A watch request was answered: events flow from here on.
    WatchStarted,
    /// The API server sent a bookmark: nothing happened up to its version.
    Bookmark,
}

/// Told each [`Pulse`].
pub type OnPulse = Arc<dyn Fn(Pulse) + Send + Sync>;

/// Every object of `api` as watcher events, listing again when the watch's
/// version has expired; errors are items, for `default_backoff`.
pub fn list_then_watch<K>(api: Api<K>) -> impl Stream<Item = Result<Event<K>, Error>> + Send
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    in_pages(api, PAGE)
}

/// [`list_then_watch`], telling `on_pulse` each [`Pulse`].
pub fn with_pulse<K>(
    api: Api<K>,
    on_pulse: OnPulse,
) -> impl Stream<Item = Result<Event<K>, Error>> + Send
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    from_source(Source {
        api,
        page: PAGE,
        on_pulse: Some(on_pulse),
    })
}

/// [`list_then_watch`] with pages of `page` objects (tests list in small
/// pages to cross page boundaries).
pub fn in_pages<K>(api: Api<K>, page: u32) -> impl Stream<Item = Result<Event<K>, Error>> + Send
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    from_source(Source {
        api,
        page,
        on_pulse: None,
    })
}

fn from_source<K>(source: Source<K>) -> impl Stream<Item = Result<Event<K>, Error>> + Send
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    futures::stream::unfold((source, State::List), |(source, state)| async move {
        let (event, state) = step(&source, state).await;
        Some((event, (source, state)))
    })
    .filter_map(std::future::ready)
}

/// What is listed and watched, in pages of how many, and who is told
/// the watch's pulse.
struct Source<K> {
    api: Api<K>,
    page: u32,
    on_pulse: Option<OnPulse>,
}

impl<K> Source<K> {
    fn pulse(&self, pulse: Pulse) {
        if let Some(on_pulse) = &self.on_pulse {
            on_pulse(pulse);
        }
    }
}

type Body = Pin<Box<dyn AsyncBufRead + Send>>;

enum State<K> {
    /// Nothing listed yet, or the watch's version expired: list.
    List,
    /// The list's answer, cut into items as it arrives; `parsed` are the
    /// objects of the pieces read so far, not yet told.
    Listing {
        body: Body,
        items: Items,
        parsed: VecDeque<K>,
    },
    /// Listed, or a watch ended: watch from this version.
    Listed { version: String },
    Watching {
        version: String,
        events: BoxStream<'static, kube::Result<WatchEvent<K>>>,
    },
}

/// One step; `None` is a step with nothing to tell (a piece read, a
/// bookmark, a watch started or ended).
async fn step<K>(source: &Source<K>, state: State<K>) -> (Option<Result<Event<K>, Error>>, State<K>)
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    match state {
        State::List => match list(source, None).await {
            Ok(listing) => (Some(Ok(Event::Init)), listing),
            Err(e) => (Some(Err(Error::InitialListFailed(e))), State::List),
        },
        State::Listing {
            body,
            items,
            mut parsed,
        } => match parsed.pop_front() {
            Some(object) => {
                let listing = State::Listing {
                    body,
                    items,
                    parsed,
                };
                (Some(Ok(Event::InitApply(object))), listing)
            }
            None => match read_piece(body, items, parsed).await {
                Ok(Read::Piece(listing)) => (None, listing),
                Ok(Read::PageEnd(page)) => next_page(source, page).await,
                Err(e) => (Some(Err(Error::InitialListFailed(e))), State::List),
            },
        },
        State::Listed { version } => {
            let params = WatchParams::default().timeout(WATCH_SECONDS);
            match source.api.watch(&params, &version).await {
                Ok(events) => {
                    source.pulse(Pulse::WatchStarted);
                    let events = events.boxed();
                    (None, State::Watching { version, events })
                }
                Err(e) => (
                    Some(Err(Error::WatchStartFailed(e))),
                    State::Listed { version },
                ),
            }
        }
        State::Watching {
            version,
            mut events,
        } => {
            let idle = Duration::from_secs(WATCH_SECONDS.into()) + IDLE_MARGIN;
            let next = tokio::time::timeout(idle, events.next())
                .await
                .ok()
                .flatten();
            if let Some(Ok(WatchEvent::Bookmark(_))) = &next {
                source.pulse(Pulse::Bookmark);
            }
            watched(next, version, events)
        }
    }
}

/// What one watch event means, and where the watch goes on from.
fn watched<K: Resource>(
    next: Option<kube::Result<WatchEvent<K>>>,
    version: String,
    events: BoxStream<'static, kube::Result<WatchEvent<K>>>,
) -> (Option<Result<Event<K>, Error>>, State<K>) {
    let event = match next {
        None => return (None, State::Listed { version }),
        Some(Ok(WatchEvent::Bookmark(mark))) => {
            let version = mark.metadata.resource_version;
            return (None, State::Watching { version, events });
        }
        // Gone: the version is older than the API server keeps; list again.
        Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
            return (Some(Err(Error::WatchError(status))), State::List);
        }
        Some(Ok(WatchEvent::Error(status))) => Err(Error::WatchError(status)),
        Some(Err(e)) => Err(Error::WatchFailed(e)),
        Some(Ok(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
            Ok(Event::Apply(object))
        }
        Some(Ok(WatchEvent::Deleted(object))) => Ok(Event::Delete(object)),
    };
    let seen = match &event {
        Ok(Event::Apply(object) | Event::Delete(object)) => object.resource_version(),
        _ => None,
    };
    let version = seen.unwrap_or(version);
    (Some(event), State::Watching { version, events })
}

/// Asks for a page of the list (the first without a token): the newest
/// version, as a consistent read, and big pages (the module's comment says
/// why).
async fn list<K: Resource + Clone>(
    source: &Source<K>,
    token: Option<&str>,
) -> kube::Result<State<K>> {
    let mut params = ListParams::default().limit(source.page);
    params.continue_token = token.map(str::to_string);
    let request = kube::core::Request::new(source.api.resource_url())
        .list(&params)
        .map_err(kube::Error::BuildRequest)?;
    let body = kube::Client::from(source.api.clone())
        .request_stream(request)
        .await?;
    Ok(State::Listing {
        body: Box::pin(body),
        items: Items::default(),
        parsed: VecDeque::new(),
    })
}

enum Read<K> {
    /// A piece read: the page goes on, with the piece's objects.
    Piece(State<K>),
    /// The page is over: its `metadata` (continue token, version).
    PageEnd(ListMeta),
}

/// The next piece of a page and its objects, or the page's end.
async fn read_piece<K: DeserializeOwned>(
    mut body: Body,
    mut items: Items,
    mut parsed: VecDeque<K>,
) -> kube::Result<Read<K>> {
    let piece = tokio::time::timeout(STALLED, body.fill_buf())
        .await
        .unwrap_or_else(|_| {
            let why = "the API server sent nothing of the list for 60 s";
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
        })
        .map_err(kube::Error::ReadEvents)?;
    if piece.is_empty() {
        return Ok(Read::PageEnd(page_meta(&items.rest()?)?));
    }
    let read = piece.len();
    items.feed(piece, |item| {
        let object = serde_json::from_slice(item).map_err(kube::Error::SerdeError)?;
        parsed.push_back(object);
        Ok::<_, kube::Error>(())
    })?;
    body.consume_unpin(read);
    Ok(Read::Piece(State::Listing {
        body,
        items,
        parsed,
    }))
}

/// After a page: the next one, or the list is done and is watched from
/// its version.
async fn next_page<K: Resource + Clone>(
    source: &Source<K>,
    page: ListMeta,
) -> (Option<Result<Event<K>, Error>>, State<K>) {
    let next = match (
        page.continue_.filter(|t| !t.is_empty()),
        page.resource_version,
    ) {
        (Some(token), _) => list(source, Some(&token)).await,
        (None, Some(version)) => return (Some(Ok(Event::InitDone)), State::Listed { version }),
        (None, None) => Err(unreadable("the list has no metadata.resourceVersion")),
    };
    match next {
        Ok(listing) => (None, listing),
        Err(e) => (Some(Err(Error::InitialListFailed(e))), State::List),
    }
}

/// A page's `metadata`, from the page without its items.
fn page_meta(rest: &[u8]) -> kube::Result<ListMeta> {
    #[derive(Deserialize)]
    struct Page {
        metadata: ListMeta,
    }
    let page: Page = serde_json::from_slice(rest).map_err(kube::Error::SerdeError)?;
    Ok(page.metadata)
}

impl From<ItemsError> for kube::Error {
    fn from(e: ItemsError) -> kube::Error {
        unreadable(e)
    }
}

fn unreadable(why: impl std::fmt::Display) -> kube::Error {
    kube::Error::SerdeError(serde::de::Error::custom(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_without_its_items_tells_its_token_and_version() {
        let rest = br#"{"kind":"ApiKeyList","items":[],"metadata":{"resourceVersion":"7","continue":"c2"}}"#;
        let page = page_meta(rest).unwrap();
        assert_eq!(page.resource_version.as_deref(), Some("7"));
        assert_eq!(page.continue_.as_deref(), Some("c2"));
        assert!(page_meta(br#"{"items":[]}"#).is_err());
    }
}
