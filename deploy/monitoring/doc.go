// Package monitoring checks what a platform team watches meshmetrics with:
// the alert rules (deploy/prometheus, the chart's PrometheusRule) and the
// Grafana dashboard (deploy/grafana, the chart's dashboard ConfigMap). Its
// tests run promtool on the rules and their unit tests, and run every
// expression of both against a real Prometheus that scrapes a meshmetrics
// binary under load, with the conditions the alerts are about brought
// about for real: a replica down, a backend refusing pushes, series caps,
// a refused handler config, spooled requests nobody claims, a torn spool
// file.
package monitoring
