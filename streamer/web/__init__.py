"""The coordinator's live dashboard: static HTML, JS and CSS served by the status
server at ``/`` (no build step); it polls the JSON status endpoints."""
