"""schemathesis hooks for refex's media types (api_fuzz.sh loads them).

A JOSE compact serialisation and the console's pages and stylesheet are text: sent as the
string the schema generated, and read back as text so every answer is still checked against
its schema (its pattern, for a sealed delivery).
"""

import schemathesis


@schemathesis.serializer("application/jose")
def jose_request(ctx, value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return value
    # Negative tests generate other JSON values: send their JSON text, which is no JOSE.
    import json

    return json.dumps(value).encode()


@schemathesis.deserializer("application/jose", "text/html", "text/css", "text/csv")
def as_text(ctx, response):
    return response.content.decode("utf-8")
