//! The CloudState shopping cart as a Restate virtual object keyed by user id:
//! `addItem` adds to a line item's quantity (a non-positive quantity fails the
//! call without touching state), `getCart` reads the cart (a shared handler).
//! The cart is one state entry per object, as a user would write it.
//!
//! Served over HTTP/2 like the SDK's own `HttpServer`, with one difference: every
//! accepted connection sets `TCP_NODELAY`. The SDK's server leaves Nagle's
//! algorithm on, and once a reply spans more than one write (a cart of a few line
//! items does) the second write waits for the server's delayed ACK: about 40 ms a
//! call, which made Restate read ten times slower here than it is
//! (bench/notes.md, "The Restate baseline read low").

use hyper_util::rt::{TokioExecutor, TokioIo};
use restate_sdk::{hyper::HyperEndpoint, prelude::*};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct LineItem {
    product_id: String,
    name: String,
    quantity: i32,
}

#[derive(Serialize, Deserialize, Default)]
struct CartState {
    items: Vec<LineItem>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddLineItem {
    product_id: String,
    name: String,
    quantity: i32,
}

const CART: &str = "cart";

/// The virtual object; Restate names it after the type (`Cart`).
struct Cart;

#[restate_sdk::object]
impl Cart {
    #[handler(name = "addItem")]
    async fn add_item(&self, ctx: ObjectContext<'_>, Json(item): Json<AddLineItem>) -> Result<(), HandlerError> {
        if item.quantity <= 0 {
            return Err(TerminalError::new(format!("cannot add {} items", item.quantity)).into());
        }
        let mut cart = ctx
            .get::<Json<CartState>>(CART)
            .await?
            .map(|Json(cart)| cart)
            .unwrap_or_default();
        match cart.items.iter_mut().find(|line| line.product_id == item.product_id) {
            Some(line) => line.quantity += item.quantity,
            None => cart.items.push(LineItem {
                product_id: item.product_id,
                name: item.name,
                quantity: item.quantity,
            }),
        }
        ctx.set(CART, Json(cart));
        Ok(())
    }

    #[handler(name = "getCart")]
    async fn get_cart(&self, ctx: SharedObjectContext<'_>) -> Result<Json<CartState>, HandlerError> {
        Ok(ctx.get::<Json<CartState>>(CART).await?.unwrap_or_default())
    }
}

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "9080".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("the cart's port is free");
    let endpoint = HyperEndpoint::new(Endpoint::builder().bind(Cart).build());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), endpoint.clone());
        tokio::spawn(connection);
    }
}
