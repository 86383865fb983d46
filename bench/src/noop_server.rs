//! The baseline: voltd's HTTP stack (actix-web, same worker count) answering every webhook
//! POST with 200 as soon as the body is read, storing nothing.

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};

async fn accept(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"stored","id":0}"#)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: noop-server PATH [WORKERS]";
    let path = args.next().expect(usage);
    let workers: Option<usize> = args.next().map(|w| w.parse().expect(usage));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // The bench script reads the port from this line.
    println!("listening on {}", listener.local_addr()?);
    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(move || App::new().route(&path, web::post().to(accept)))
            .listen(listener)?;
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        server.run().await
    })
}
