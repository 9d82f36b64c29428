"""Fleet side: watch devices over MQTT, store their history, roll out models, serve a dashboard.

Modules by concern: `topics` (topic names and broker URLs), `mqtt` (client setup),
`store` (SQLite/PostgreSQL event store), `recorder` (broker -> store), `monitor`
(live device state + rich table), `deploy` (commands and rollouts), `dashboard` (web page).
"""
