//! Everything that knows TikTok's Events API: the wire format ([`wire`]), what a response means
//! ([`classify`]), how long to wait before trying again ([`backoff`]) and the HTTP client
//! ([`client`]). No other module builds or reads TikTok JSON.

pub mod backoff;
pub mod classify;
pub mod client;
#[cfg(test)]
mod fleet;
mod lookup;
pub mod wire;
