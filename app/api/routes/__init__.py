"""One router per resource; each route is schema in, engine call, schema out."""
