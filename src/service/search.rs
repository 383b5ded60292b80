//! SearchMessages: the query's meaning (crate::search), filters and opaque page tokens over the
//! storage's ranked read.
use super::*;

/// The most chats a SearchMessages chat filter may name.
pub const MAX_SEARCH_CHATS: usize = 1_000;

/// What SearchMessages asks for (see [`ChatSync::search_messages`]).
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub session_id: String,
    /// The query as written; parsed by [`SearchQuery::parse`].
    pub query: String,
    /// Only these chats; empty means all.
    pub chat_ids: Vec<String>,
    /// Only messages sent at or after this instant (Unix ms).
    pub sent_after_ms: Option<i64>,
    /// Only messages sent before this instant (Unix ms).
    pub sent_before_ms: Option<i64>,
    /// Page size; 0 means [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    pub limit: u32,
    /// Empty, or the `next_page_token` of the previous page.
    pub page_token: String,
}

/// One search result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub message: Message,
    /// The text around the first match, matches marked (see [`crate::search`]).
    pub snippet: String,
    /// Relevance, higher is better.
    pub score: f64,
}

/// A page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Empty when no hit follows.
    pub next_page_token: String,
}

/// Where a search page starts: an offset into the ranked hits among the messages with
/// `id <= max_id` (those that existed when the first page was read). Written as
/// `s1.<offset>.<max_id>`; clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageToken {
    offset: u64,
    max_id: i64,
}

impl PageToken {
    fn parse(token: &str) -> Result<Self> {
        let invalid =
            || Error::InvalidArgument(format!("page_token {token:?} is not one this server made"));
        let mut parts = token.strip_prefix("s1.").ok_or_else(invalid)?.split('.');
        let offset = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        let max_id = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        if parts.next().is_some() || max_id < 0 {
            return Err(invalid());
        }
        Ok(Self { offset, max_id })
    }

    fn encode(self) -> String {
        format!("s1.{}.{}", self.offset, self.max_id)
    }
}

impl ChatSync {
    /// A page of the session's messages matching a query, best first, with snippets.
    ///
    /// `InvalidArgument` for a bad query ([`SearchQuery::parse`]), limit, chat filter (more
    /// than [`MAX_SEARCH_CHATS`]), time range
    /// (`sent_after` not before `sent_before`) or page token; `NotFound` for an unknown
    /// session. A page holds at most `limit` hits, and fewer when their encoded size would pass
    /// the page budget (as in [`Self::list_chats`]).
    pub async fn search_messages(&self, request: SearchRequest) -> Result<SearchPage> {
        self.source(&request.session_id)?;
        let query = SearchQuery::parse(&request.query)?;
        let limit = page_size(request.limit)?;
        if request.chat_ids.len() > MAX_SEARCH_CHATS {
            return Err(Error::InvalidArgument(format!(
                "{} chat_ids, over the maximum of {MAX_SEARCH_CHATS}",
                request.chat_ids.len()
            )));
        }
        if let (Some(after), Some(before)) = (request.sent_after_ms, request.sent_before_ms)
            && after >= before
        {
            return Err(Error::InvalidArgument(
                "sent_after must be before sent_before".into(),
            ));
        }
        let store = &self.inner.store;
        let start = if request.page_token.is_empty() {
            PageToken {
                offset: 0,
                max_id: store.max_message_id().await?,
            }
        } else {
            PageToken::parse(&request.page_token)?
        };
        let filter = SearchFilter {
            chat_ids: request.chat_ids,
            sent_after_ms: request.sent_after_ms,
            sent_before_ms: request.sent_before_ms,
            max_id: start.max_id,
        };
        let found = store
            .search(
                &request.session_id,
                &query,
                &filter,
                start.offset,
                limit + 1,
            )
            .await?;
        let mut hits: Vec<SearchHit> = found
            .into_iter()
            .map(|found| SearchHit {
                snippet: query.snippet(&found.message.text),
                message: found.message,
                score: found.score,
            })
            .collect();
        let fitting = fit_oldest(&hits, self.inner.page_bytes, EncodedLen::encoded_len);
        let keep = (limit as usize).min(fitting);
        let has_more = hits.len() > keep;
        hits.truncate(keep);
        let next_page_token = if has_more {
            PageToken {
                offset: start.offset + keep as u64,
                max_id: start.max_id,
            }
            .encode()
        } else {
            String::new()
        };
        Ok(SearchPage {
            hits,
            next_page_token,
        })
    }
}

#[cfg(test)]
mod search_tests {
    use super::PageToken;

    #[test]
    fn page_tokens_round_trip_and_refuse_what_the_server_did_not_make() {
        let token = PageToken {
            offset: 40,
            max_id: 7,
        };
        assert_eq!(PageToken::parse(&token.encode()).unwrap(), token);
        for bad in ["40", "s1.", "s1.x.1", "s1.1.-2", "s1.1.2.3", "s2.1.2"] {
            assert!(PageToken::parse(bad).is_err(), "{bad}");
        }
    }
}
