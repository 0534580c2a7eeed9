"""`ciel broadcast`: the web page of the oval map, served from baked scenes or rendered live from
the patch's models. The HTTP server and its media live in engine/web; this package wires them to
a patch (the show's layer)."""
