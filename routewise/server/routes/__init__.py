"""One ``APIRouter`` per resource; :func:`routewise.server.create_app` includes them all."""
