//! The shopping cart as users build it without Strata: a stateless axum service
//! whose every request is a PostgreSQL transaction. `AddItem` locks the cart's
//! row (`SELECT ... FOR UPDATE`) and upserts the line item; `GetCart` reads the
//! items. Same HTTP API as the Strata cart's `google.api.http` bindings, so one
//! load generator drives both. `PORT` and `DATABASE_URL` configure it.

use std::net::SocketAddr;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt,
    Json, Router,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddLineItem {
    product_id: String,
    #[serde(default)]
    name: String,
    quantity: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineItem {
    product_id: String,
    name: String,
    quantity: i32,
}

/// A failed request: the status and a message, as the Strata cart answers.
struct Failed(StatusCode, String);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": {"message": self.1}}))).into_response()
    }
}

impl From<tokio_postgres::Error> for Failed {
    fn from(error: tokio_postgres::Error) -> Self {
        Failed(StatusCode::SERVICE_UNAVAILABLE, format!("database: {error}"))
    }
}

impl From<deadpool_postgres::PoolError> for Failed {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Failed(StatusCode::SERVICE_UNAVAILABLE, format!("database pool: {error}"))
    }
}

async fn add_item(
    State(pool): State<Pool>,
    Path(user_id): Path<String>,
    Json(item): Json<AddLineItem>,
) -> Result<Json<serde_json::Value>, Failed> {
    if item.quantity <= 0 {
        return Err(Failed(
            StatusCode::BAD_REQUEST,
            format!("cannot add {} items", item.quantity),
        ));
    }
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO carts (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&user_id],
        )
        .await?;
    transaction
        .execute("SELECT user_id FROM carts WHERE user_id = $1 FOR UPDATE", &[&user_id])
        .await?;
    transaction
        .execute(
            "INSERT INTO line_items (user_id, product_id, name, quantity) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = line_items.quantity + EXCLUDED.quantity",
            &[&user_id, &item.product_id, &item.name, &item.quantity],
        )
        .await?;
    transaction.commit().await?;
    Ok(Json(json!({})))
}

async fn get_cart(State(pool): State<Pool>, Path(user_id): Path<String>) -> Result<Json<serde_json::Value>, Failed> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT product_id, name, quantity FROM line_items WHERE user_id = $1 ORDER BY product_id",
            &[&user_id],
        )
        .await?;
    let items: Vec<LineItem> = rows
        .iter()
        .map(|row| LineItem {
            product_id: row.get(0),
            name: row.get(1),
            quantity: row.get(2),
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT").unwrap_or_else(|_| "8080".into()).parse()?;
    let url = std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("DATABASE_URL is not set"))?;
    let pool_size: usize = std::env::var("POOL_SIZE").unwrap_or_else(|_| "32".into()).parse()?;
    let manager = Manager::from_config(
        url.parse()?,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(pool_size).build()?;
    pool.get()
        .await?
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS carts (user_id TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS line_items (
                 user_id TEXT NOT NULL, product_id TEXT NOT NULL, name TEXT NOT NULL, quantity INT NOT NULL,
                 PRIMARY KEY (user_id, product_id));",
        )
        .await?;
    let app = Router::new()
        .route("/cart/{user_id}/items/add", post(add_item))
        .route("/carts/{user_id}", get(get_cart))
        .with_state(pool);
    // TCP_NODELAY on every connection, as axum's documentation shows: without it
    // an answer written in two parts can wait for a delayed ACK (40 ms).
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await?;
    Ok(())
}
