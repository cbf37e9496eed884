module mlmon/tests/grafana/expand

go 1.19
