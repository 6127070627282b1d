"""Pure SDP (RFC 4566) parse/serialise and RFC 3264 offer/answer."""
