//! A minimal HTTP/1 server for the metrics and health endpoints (hyper).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A response with a body held in memory.
pub type HttpResponse = Response<Full<Bytes>>;

/// Builds a response; the builder only fails on invalid header values, which
/// callers never pass, so a failure degrades to an empty 500.
pub fn response(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> HttpResponse {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Full::new(body.into())).unwrap_or_else(|_| {
        let mut fallback = Response::new(Full::new(Bytes::new()));
        *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// Serves `handler` on `listener` until `stop` turns true.
pub async fn serve<H>(listener: TcpListener, handler: H, mut stop: watch::Receiver<bool>)
where
    H: Fn(&Request<Incoming>) -> HttpResponse + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handler = handler.clone();
                tokio::spawn(serve_connection(stream, move |request: Request<Incoming>| {
                    let answer = handler(&request);
                    async move { Ok::<_, Infallible>(answer) }
                }));
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn serve_connection<F, Fut>(stream: tokio::net::TcpStream, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<HttpResponse, Infallible>> + Send + 'static,
{
    // A client that hangs up mid-request is not our problem.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(handle))
        .await;
}
