"""The human-feedback web app: raters compare, rank, rate and correct model outputs; judgments become records.

Modules, each owning one thing:
- `db` the tables and the engine; `migrate` + `migrations/` the schema's history (Alembic);
- `tasks` task types and their answers (pure); `assign` leases, overlap and append-only judgments (the core);
- `campaigns` reading item files and storing campaigns; `accounts` the rules for new users; `export`
  judgments -> training records (pairs, rankings, ratings, SFT records), export ids, exclusions; `source` the
  `feedback:DB#CAMPAIGN` data source;
- `analysis` a campaign's agreement (α, κ, raters flagged), position bias and leaderboard, from eval/stats;
- `simulate` simulated raters judging through the HTTP API, and a server in a thread;
- `security` passwords, tokens, CSRF, rate limits, headers; `render` Markdown through a sanitiser;
- `web` who is asking (the one auth dependency); `app` wiring; `pages`, `manage`, `api` the routes;
- `templates/`, `static/` (htmx vendored from its npm package, app.js, app.css);
- `cli` the `posttrain feedback` commands (layer 8).
Needs the `feedback` extra: pip install 'posttrain[feedback]'.
"""
