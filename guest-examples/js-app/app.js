// rustcorn example guest in JavaScript, built into a wasi:http/proxy component with
// componentize-js (StarlingMonkey). It handles requests with the web-standard fetch event.
//
// Routes:
//   GET  /        -> 200 "Hello from JavaScript!\n" (text/plain)
//   POST /echo    -> 200 with the request body echoed back
//   GET  /json    -> 200 {"runtime":"javascript","path":...} (application/json)
//   anything else -> 404 "not found\n"

async function handle(request) {
  const url = new URL(request.url);
  if (url.pathname === "/" && request.method === "GET") {
    return new Response("Hello from JavaScript!\n", {
      headers: { "content-type": "text/plain" },
    });
  }
  if (url.pathname === "/echo" && request.method === "POST") {
    const body = await request.arrayBuffer();
    return new Response(body, {
      headers: {
        "content-type": request.headers.get("content-type") ?? "application/octet-stream",
      },
    });
  }
  if (url.pathname === "/json" && request.method === "GET") {
    return Response.json({ runtime: "javascript", path: url.pathname });
  }
  return new Response("not found\n", {
    status: 404,
    headers: { "content-type": "text/plain" },
  });
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
