// Package crd loads Istio Mixer config (config.istio.io/v1alpha2 attributemanifests,
// templates, adapters, handlers, instances and rules) from YAML files the way Mixer's fs
// store does, and resolves the references between them with Mixer's naming rules.
package crd
