// Package metricpb holds the metric template's messages and service
// (HandleMetricRequest, InstanceMsg, HandleMetricService), generated with gogo
// from mixer/template/metric/template_handler_service.proto, and the
// template's descriptor set for the template CR.
package metricpb
