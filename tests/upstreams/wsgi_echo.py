"""A WSGI upstream on Python's reference server (wsgiref): it answers with the CGI environment
it built from the request (method, PATH_INFO, query and every HTTP_* variable) as JSON. Like
every CGI-style server it reads `X_User_Id` and `X-User-Id` as the same HTTP_X_USER_ID.

Prints its port on the first line, then serves until killed."""

import json
from wsgiref.simple_server import WSGIRequestHandler, make_server


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "path_info": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "environ": seen,
        }
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
