package crd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// Store holds the Mixer config read by Load, keyed by <name>.<kind>.<namespace>.
type Store struct {
	manifests map[string]*AttributeManifest
	templates map[string]*Template
	adapters  map[string]*Adapter
	handlers  map[string]*Handler
	instances map[string]*Instance
	rules     map[string]*Rule
	// specs are the documents' specs as read, by key, for LineOf.
	specs map[string]specNode
}

// specNode is a spec and what turns its node lines into file lines.
type specNode struct {
	node   *yaml.Node
	offset int
}

func newStore() *Store {
	return &Store{
		specs:     map[string]specNode{},
		manifests: map[string]*AttributeManifest{},
		templates: map[string]*Template{},
		adapters:  map[string]*Adapter{},
		handlers:  map[string]*Handler{},
		instances: map[string]*Instance{},
		rules:     map[string]*Rule{},
	}
}

// Load reads files and directories the way Mixer's fs store does
// (mixer/pkg/config/store/fsstore.go): directories are walked recursively for .yaml and .yml
// files, files are split on "\n---\n", and every document needs kind, metadata.name and
// metadata.namespace. Documents of other kinds, such as Kubernetes Deployments, are skipped.
// A file named explicitly is read whatever its extension.
//
// Unlike Mixer, which logs a bad document and carries on, Load fails: it reports every
// problem it finds, each as a *LoadError naming the file and line, joined into one error.
func Load(paths ...string) (*Store, error) {
	return LoadSources(nil, paths...)
}

// Source is config held in memory (embedded defaults, generated test config). Name stands
// for the file name in errors.
type Source struct {
	Name string
	Data []byte
}

// LoadSources is Load for config that is partly in memory: sources are read first, then
// paths, into one store, so that references between them resolve.
func LoadSources(sources []Source, paths ...string) (*Store, error) {
	s := newStore()
	var errs []error
	for _, src := range sources {
		errs = append(errs, s.parse(src.Name, src.Data)...)
	}
	for _, p := range paths {
		files, err := yamlFiles(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, s.parse(f, data)...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func yamlFiles(root string) ([]string, error) {
	info, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{root}, nil
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && path != root && KubernetesInternalDir(e.Name()) {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		// Stat follows symlinks, so linked files (as in mounted ConfigMaps) are
		// read; a dangling link or a link to a directory is not a config file.
		if fi, statErr := os.Stat(path); statErr != nil || !fi.Mode().IsRegular() {
			return nil //nolint:nilerr // skipped, not an error: see above
		}
		files = append(files, path)
		return nil
	})
	return files, err
}

// KubernetesInternalDir tells whether a directory name is one of the
// kubelet's own in a mounted ConfigMap, Secret or projected volume: its
// atomic writer keeps the files in a "..<timestamp>" directory, points
// "..data" at it and links each key's name to "..data/<key>", so that an
// update swaps one link. Walking the volume reads each file through its
// link; the timestamped directory holds the same files again and is
// skipped, or every resource would be defined twice.
func KubernetesInternalDir(name string) bool { return strings.HasPrefix(name, "..") }

func (s *Store) parse(file string, data []byte) []error {
	var errs []error
	line := 1
	for _, chunk := range bytes.Split(data, []byte("\n---\n")) {
		errs = append(errs, s.parseChunk(file, line, chunk)...)
		line += bytes.Count(chunk, []byte("\n")) + 2
	}
	return errs
}

// yamlLine finds the line yaml.v3 puts in its syntax errors ("yaml: line 3: ...").
func yamlLine(msg string) (int, string, bool) {
	m := regexp.MustCompile(`^yaml: line (\d+): (.*)$`).FindStringSubmatch(msg)
	if m == nil {
		return 0, strings.TrimPrefix(msg, "yaml: "), false
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[2], true
}

func (s *Store) parseChunk(file string, startLine int, chunk []byte) []error {
	d := &decoder{file: file, offset: startLine - 1}
	dec := yaml.NewDecoder(bytes.NewReader(chunk))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, msg, ok := yamlLine(err.Error())
			if !ok {
				line = 1
				msg += " (in the document starting here)"
			}
			d.errs = append(d.errs, &LoadError{File: file, Line: d.offset + line, Msg: "invalid YAML: " + msg})
			break
		}
		s.document(d, &doc)
	}
	return d.errs
}

// document reads one YAML document into the store.
func (s *Store) document(d *decoder, doc *yaml.Node) {
	if len(doc.Content) == 0 {
		return
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return
	}
	if root.Kind != yaml.MappingNode {
		d.fail(root, "a config document must be a mapping, got %s", kindName(root))
		return
	}
	top := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		top[root.Content[i].Value] = resolve(root.Content[i+1])
	}
	kindNode := top["kind"]
	if kindNode == nil || kindNode.Value == "" {
		d.fail(root, "document has no kind")
		return
	}
	kind := kindNode.Value
	switch kind {
	case KindAttributeManifest, KindTemplate, KindAdapter, KindHandler, KindInstance, KindRule:
	default:
		return
	}
	if v := top["apiVersion"]; v == nil || v.Value != APIVersion {
		got := "none"
		if v != nil {
			got = strconv.Quote(v.Value)
		}
		d.fail(kindNode, "kind %s needs apiVersion %s, got %s", kind, APIVersion, got)
		return
	}
	meta := Meta{Kind: kind, File: d.file, Line: d.line(root)}
	if !d.metadata(root, top["metadata"], &meta) {
		return
	}
	// An absent or null spec reaches jsonpb as JSON null, which leaves the message empty.
	spec := top["spec"]
	if spec == nil || isNull(spec) {
		spec = &yaml.Node{Kind: yaml.MappingNode, Line: root.Line}
	}
	before := len(d.errs)
	var res interface{ meta() *Meta }
	switch kind {
	case KindAttributeManifest:
		m := &AttributeManifest{Meta: meta}
		d.attributeManifest(spec, m)
		res = m
	case KindTemplate:
		t := &Template{Meta: meta}
		d.template(spec, t)
		res = t
	case KindAdapter:
		a := &Adapter{Meta: meta}
		d.adapter(spec, a)
		res = a
	case KindHandler:
		h := &Handler{Meta: meta}
		d.handler(spec, h)
		res = h
	case KindInstance:
		i := &Instance{Meta: meta}
		d.instance(spec, i)
		res = i
	case KindRule:
		r := &Rule{Meta: meta}
		d.rule(spec, r)
		res = r
	}
	if len(d.errs) > before {
		return
	}
	if prev := s.lookup(meta.Key()); prev != nil {
		d.fail(root, "%s is defined twice: also at %s", meta.Key(), prev.Source())
		return
	}
	s.add(res)
	s.specs[meta.Key()] = specNode{node: spec, offset: d.offset}
}

func (d *decoder) metadata(root, n *yaml.Node, meta *Meta) bool {
	if n == nil {
		d.fail(root, "%s has no metadata", meta.Kind)
		return false
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, "metadata must be a mapping, got %s", kindName(n))
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		switch k.Value {
		case "name":
			meta.Name = d.str(v, "metadata.name")
		case "namespace":
			meta.Namespace = d.str(v, "metadata.namespace")
		case "annotations":
			if !isNull(v) {
				meta.Annotations = d.strMap(v, "metadata.annotations")
			}
		}
	}
	ok := true
	if meta.Name == "" {
		d.fail(n, "%s has no metadata.name", meta.Kind)
		ok = false
	}
	if meta.Namespace == "" {
		d.fail(n, "%s '%s' has no metadata.namespace (Mixer's fs store requires one)", meta.Kind, meta.Name)
		ok = false
	}
	return ok
}

func (m *Meta) meta() *Meta { return m }

// LineOf is the file line of a field of m's spec, named by its path of
// keys (either spelling, snake_case or lowerCamelCase) and list indexes:
// LineOf(m, "params", "metrics", "0", "label_names", "2"). It falls back to
// the deepest field found, and to the document's first line.
func (s *Store) LineOf(m *Meta, path ...string) int {
	sp, ok := s.specs[m.Key()]
	if !ok {
		return m.Line
	}
	n, line := sp.node, m.Line
	for _, key := range path {
		if n == nil {
			break
		}
		n = resolve(n)
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if k := n.Content[i].Value; k == key || jsonName(k) == jsonName(key) {
					next, line = n.Content[i+1], sp.offset+n.Content[i].Line
					break
				}
			}
		case yaml.SequenceNode:
			if i, err := strconv.Atoi(key); err == nil && i >= 0 && i < len(n.Content) {
				next = n.Content[i]
				line = sp.offset + next.Line
			}
		}
		n = next
	}
	return line
}

func (s *Store) add(res interface{ meta() *Meta }) {
	key := res.meta().Key()
	switch r := res.(type) {
	case *AttributeManifest:
		s.manifests[key] = r
	case *Template:
		s.templates[key] = r
	case *Adapter:
		s.adapters[key] = r
	case *Handler:
		s.handlers[key] = r
	case *Instance:
		s.instances[key] = r
	case *Rule:
		s.rules[key] = r
	}
}

func (s *Store) lookup(key string) *Meta {
	if m, ok := s.manifests[key]; ok {
		return &m.Meta
	}
	if t, ok := s.templates[key]; ok {
		return &t.Meta
	}
	if a, ok := s.adapters[key]; ok {
		return &a.Meta
	}
	if h, ok := s.handlers[key]; ok {
		return &h.Meta
	}
	if i, ok := s.instances[key]; ok {
		return &i.Meta
	}
	if r, ok := s.rules[key]; ok {
		return &r.Meta
	}
	return nil
}

func sorted[T any](m map[string]*T) []*T {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*T, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// AttributeManifests returns the attribute manifests, sorted by key.
func (s *Store) AttributeManifests() []*AttributeManifest { return sorted(s.manifests) }

// Templates returns the templates, sorted by key.
func (s *Store) Templates() []*Template { return sorted(s.templates) }

// Adapters returns the adapters, sorted by key.
func (s *Store) Adapters() []*Adapter { return sorted(s.adapters) }

// Handlers returns the handlers, sorted by key.
func (s *Store) Handlers() []*Handler { return sorted(s.handlers) }

// Instances returns the instances, sorted by key.
func (s *Store) Instances() []*Instance { return sorted(s.instances) }

// Rules returns the rules, sorted by key.
func (s *Store) Rules() []*Rule { return sorted(s.rules) }

// Manifest merges every attribute manifest, whatever its namespace, as Mixer does
// (ephemeral.go, processAttributeManifests). An attribute declared with two different
// types is an error rather than Mixer's arbitrary pick.
func (s *Store) Manifest() (expr.Manifest, error) {
	out := expr.Manifest{}
	from := map[string]*AttributeManifest{}
	var errs []error
	for _, m := range s.AttributeManifests() {
		names := make([]string, 0, len(m.Attributes))
		for name := range m.Attributes {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			t := m.Attributes[name].ValueType
			if prev, ok := out[name]; ok && prev != t {
				errs = append(errs, fmt.Errorf("attribute %s is %s in %s but %s in %s",
					name, prev, from[name].describe(), t, m.describe()))
				continue
			}
			out[name], from[name] = t, m
		}
	}
	return out, errors.Join(errs...)
}
