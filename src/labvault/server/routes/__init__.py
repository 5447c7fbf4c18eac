"""One router per resource; each route names the role it needs and calls one service."""
