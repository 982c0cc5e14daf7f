// Package manifest reads Kubernetes objects from files, folders and standard input, as
// kubectl apply -f does: multi-document YAML, JSON (one value after another, and arrays),
// and List objects, with folders walked recursively for .yaml, .yml and .json files, and a
// folder that holds a kustomization rendered as kubectl kustomize renders it. Every object
// keeps where it came from (file, document, List item), so that reports and errors can name
// it.
package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// DefaultMaxFileSize bounds what one input file (or standard input) may hold.
const DefaultMaxFileSize = 32 << 20

// maxDocumentSize bounds one YAML document, as the apiserver bounds a request body.
const maxDocumentSize = 8 << 20

// Stdin is the path that means standard input.
const Stdin = "-"

// Document is one object read from an input.
type Document struct {
	// File is the path as given or found by walking a folder; "-" for standard input.
	File string
	// Index is the document's number in the file, from 1; documents that hold only comments
	// or nothing are not counted.
	Index int
	// Item is the object's index in a List document or a JSON array, or -1.
	Item int
	// InArray: the document is a JSON array (Item indexes it), not a List.
	InArray bool
	// Line is where the document starts in its file, from 1 (its first line that is not
	// blank, a comment or ---); 0 when unknown.
	Line int
	// Object is the decoded object, or nil when the document is empty or not an object.
	Object *unstructured.Unstructured
}

// Location names the document for a reader: file#index, with the List item if any.
func (d *Document) Location() string {
	loc := fmt.Sprintf("%s#%d", displayName(d.File), d.Index)
	switch {
	case d.Item >= 0 && d.InArray:
		loc += fmt.Sprintf(" [%d]", d.Item)
	case d.Item >= 0:
		loc += fmt.Sprintf(" items[%d]", d.Item)
	}
	return loc
}

// Error is a problem with one input: a file that cannot be read, or a document that cannot be
// decoded. Index is 0 when the problem concerns the whole file.
type Error struct {
	File  string
	Index int
	// Line is where the document starts in the file, when known.
	Line int
	Err  error
}

func (e *Error) Error() string {
	if e.Index == 0 {
		return fmt.Sprintf("%s: %v", displayName(e.File), e.Err)
	}
	return fmt.Sprintf("%s#%d: %v", displayName(e.File), e.Index, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func displayName(file string) string {
	if file == Stdin {
		return "<stdin>"
	}
	return file
}

// Reader reads inputs.
type Reader struct {
	// MaxFileSize bounds each file; 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// Stdin is read for the path "-"; nil means os.Stdin.
	Stdin io.Reader
	// Kustomize renders each folder that holds a kustomization (kubectl apply -k) instead of
	// reading its files (kubectl apply -f).
	Kustomize bool
}

// Read reads every path in order (folders walked in lexical order), calls fn with each
// document that decoded, in order, and returns an error for each input or document that did
// not. A bad document does not stop the others from being read. Documents are handed over one
// at a time so that a large input is never held decoded as a whole.
func (r *Reader) Read(paths []string, fn func(*Document)) []error {
	var errs []error
	stdinRead := false
	read := map[string]bool{} // files reached twice (overlapping paths) are read once
	once := func(path string) bool {
		abs, err := filepath.Abs(path)
		if err != nil {
			abs = path
		}
		if read[abs] {
			return false
		}
		read[abs] = true
		return true
	}
	for _, p := range paths {
		if p == Stdin {
			if stdinRead {
				errs = append(errs, &Error{File: p, Err: errors.New("standard input is named more than once")})
				continue
			}
			stdinRead = true
			in := r.Stdin
			if in == nil {
				in = os.Stdin
			}
			errs = append(errs, r.readStream(p, in, fn)...)
			continue
		}
		info, err := os.Stat(p)
		if err != nil {
			errs = append(errs, &Error{File: p, Err: unwrapPathError(err)})
			continue
		}
		if !info.IsDir() {
			if once(p) {
				errs = append(errs, r.readFile(p, fn)...)
			}
			continue
		}
		found := false
		walkErr := filepath.WalkDir(p, func(path string, entry fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, &Error{File: path, Err: unwrapPathError(err)})
				return nil
			}
			if entry.IsDir() {
				if isHelmChart(path) {
					// Its templates are not manifests: reading them would check nothing,
					// or check what the chart's values never render.
					found = true
					errs = append(errs, &Error{File: path, Err: fmt.Errorf("a Helm chart, not manifests: render it first, with the values you deploy: helm template RELEASE %s -f values.yaml | imagegate check --policy ... -", path)})
					return filepath.SkipDir
				}
				if !r.Kustomize || !isKustomization(path) {
					return nil
				}
				// What kubectl apply -k applies: the rendered objects, not the files.
				found = true
				if once(path) {
					errs = append(errs, r.kustomize(path, fn)...)
				}
				return filepath.SkipDir
			}
			if !IsManifestFile(path) {
				return nil
			}
			found = true
			if once(path) {
				errs = append(errs, r.readFile(path, fn)...)
			}
			return nil
		})
		if walkErr != nil {
			errs = append(errs, &Error{File: p, Err: walkErr})
		}
		if !found {
			errs = append(errs, &Error{File: p, Err: errors.New("the folder holds no .yaml, .yml or .json file and no kustomization")})
		}
	}
	return errs
}

// IsManifestFile reports whether a file found in a folder is read: .yaml, .yml or .json.
func IsManifestFile(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// isHelmChart reports whether dir is a Helm chart (Chart.yaml beside templates/).
func isHelmChart(dir string) bool {
	chart, err := os.Stat(filepath.Join(dir, "Chart.yaml"))
	if err != nil || chart.IsDir() {
		return false
	}
	templates, err := os.Stat(filepath.Join(dir, "templates"))
	return err == nil && templates.IsDir()
}

// RenderedSuffix ends the File of the documents a kustomization rendered: "overlays/prod
// (kustomize)" (they have no file or line of their own).
const RenderedSuffix = " (kustomize)"

// kustomizationFiles are the names kustomize looks for in a folder.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// isKustomization reports whether dir holds a kustomization.
func isKustomization(dir string) bool {
	for _, name := range kustomizationFiles {
		if info, err := os.Stat(filepath.Join(dir, name)); err == nil && !info.IsDir() {
			return true
		}
	}
	return false
}

// kustomize renders the kustomization in dir as kubectl kustomize does (its images,
// namespace and patches applied) and reads the result; documents are named after the folder.
func (r *Reader) kustomize(dir string, fn func(*Document)) []error {
	name := dir + RenderedSuffix
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return []error{&Error{File: name, Err: fmt.Errorf("kustomize build failed: %w", err)}}
	}
	out, err := m.AsYaml()
	if err != nil {
		return []error{&Error{File: name, Err: fmt.Errorf("kustomize build failed: %w", err)}}
	}
	limit := r.MaxFileSize
	if limit <= 0 {
		limit = DefaultMaxFileSize
	}
	if int64(len(out)) > limit {
		return []error{&Error{File: name, Err: fmt.Errorf("renders to more than %s: not read (raise --max-file-size if it really is that large)", size(limit))}}
	}
	return decodeAll(name, out, fn)
}

func (r *Reader) readFile(path string, fn func(*Document)) []error {
	f, err := os.Open(path) //nolint:gosec // reading the files the user names is the point
	if err != nil {
		return []error{&Error{File: path, Err: unwrapPathError(err)}}
	}
	defer func() { _ = f.Close() }()
	return r.readStream(path, f, fn)
}

func (r *Reader) readStream(name string, in io.Reader, fn func(*Document)) []error {
	limit := r.MaxFileSize
	if limit <= 0 {
		limit = DefaultMaxFileSize
	}
	data, err := io.ReadAll(io.LimitReader(in, limit+1))
	if err != nil {
		return []error{&Error{File: name, Err: err}}
	}
	if int64(len(data)) > limit {
		return []error{&Error{File: name, Err: fmt.Errorf("larger than %s: not read (raise --max-file-size if it really is a manifest)", size(limit))}}
	}
	if bytes.HasPrefix(data, []byte{0xff, 0xfe}) || bytes.HasPrefix(data, []byte{0xfe, 0xff}) {
		return []error{&Error{File: name, Err: errors.New("UTF-16 text (what PowerShell's > writes): save it as UTF-8, e.g. with Out-File -Encoding utf8")}}
	}
	if isBinary(data) {
		return []error{&Error{File: name, Err: errors.New("not a text file (it holds NUL bytes): not YAML or JSON")}}
	}
	return decodeAll(name, data, fn)
}

func size(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// isBinary looks for NUL bytes in the first 8 KiB, as git and grep do.
func isBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), 8<<10)], 0) >= 0
}

func decodeAll(name string, data []byte, fn func(*Document)) []error {
	if first := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(first) > 0 && (first[0] == '{' || first[0] == '[') {
		if values, ok := jsonStream(data); ok {
			return decodeJSONStream(name, data, values, fn)
		}
		// Not JSON from end to end: YAML (in flow style, or JSON documents between ---).
	}
	var errs []error
	yr := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
	index := 0
	lines := lineCounter{data: data}
	for {
		raw, err := yr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, rawLine := lines.find(raw)
		if isEmptyDocument(raw) && err == nil {
			continue
		}
		index++
		if err != nil {
			// The reader cannot find the next document boundary: the rest is lost.
			errs = append(errs, &Error{File: name, Index: index, Err: err})
			break
		}
		if len(raw) > maxDocumentSize {
			errs = append(errs, &Error{File: name, Index: index, Line: line, Err: fmt.Errorf("document larger than %d MiB", maxDocumentSize>>20)})
			continue
		}
		obj, err := decode(raw)
		if err != nil {
			if bytes.Contains(raw, []byte("{{")) {
				err = fmt.Errorf("%w (it holds {{ }}: a Helm template, not a manifest; render it first: helm template RELEASE CHART | imagegate check --policy ... -)", err)
			}
			errs = append(errs, &Error{File: name, Index: index, Line: line, Err: inFile(err, rawLine)})
			continue
		}
		if obj == nil {
			fn(&Document{File: name, Index: index, Item: -1, Line: line})
			continue
		}
		errs = append(errs, expand(name, index, line, obj, fn)...)
	}
	return errs
}

// jsonValue is one value of a JSON stream and where it starts in the input.
type jsonValue struct {
	raw   json.RawMessage
	start int64
}

// jsonStream splits data into its JSON values, one after another; ok is false when data is
// not JSON from end to end.
func jsonStream(data []byte) (values []jsonValue, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return values, errors.Is(err, io.EOF)
		}
		values = append(values, jsonValue{raw: raw, start: start})
	}
}

// decodeJSONStream reads a JSON input as kubectl does: one value after another (concatenated
// JSON, as `jq -c '.items[]'` writes it), each an object, a List, or an array of objects. Each
// value is a document.
func decodeJSONStream(name string, data []byte, values []jsonValue, fn func(*Document)) []error {
	var errs []error
	lines := lineCounter{data: data}
	for n, v := range values {
		index, raw := n+1, v.raw
		line := lines.lineOf(skipSpace(data, int(v.start)))
		if len(raw) > maxDocumentSize {
			errs = append(errs, &Error{File: name, Index: index, Line: line, Err: fmt.Errorf("document larger than %d MiB", maxDocumentSize>>20)})
			continue
		}
		if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 && trimmed[0] == '[' {
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				errs = append(errs, &Error{File: name, Index: index, Line: line, Err: err})
				continue
			}
			for i, item := range items {
				obj, err := decode(item)
				switch {
				case err != nil:
					errs = append(errs, &Error{File: name, Index: index, Line: line, Err: fmt.Errorf("[%d]: %w", i, err)})
				case obj == nil:
					errs = append(errs, &Error{File: name, Index: index, Line: line, Err: fmt.Errorf("[%d] is not an object", i)})
				default:
					fn(&Document{File: name, Index: index, Item: i, InArray: true, Line: line, Object: obj})
				}
			}
			continue
		}
		obj, err := decode(raw)
		if err != nil {
			errs = append(errs, &Error{File: name, Index: index, Line: line, Err: err})
			continue
		}
		if obj == nil {
			fn(&Document{File: name, Index: index, Item: -1, Line: line})
			continue
		}
		errs = append(errs, expand(name, index, line, obj, fn)...)
	}
	return errs
}

// lineCounter tells the lines of positions in data, which must come in order: each newline
// is counted once, however many documents the input holds.
type lineCounter struct {
	data   []byte
	pos    int // the position of the last answer
	line   int // its line, from 1
	search int // where the next YAML document is looked for
}

// lineOf returns the line, from 1, of position pos (at or after the previous one asked).
func (c *lineCounter) lineOf(pos int) int {
	if c.line == 0 {
		c.line = 1
	}
	pos = min(max(pos, c.pos), len(c.data))
	c.line += bytes.Count(c.data[c.pos:pos], []byte("\n"))
	c.pos = pos
	return c.line
}

// find returns the line of raw's first line that holds something (not blank, a comment or
// ---), raw being the next document the YAML reader returned, and the line raw itself starts
// at (where the YAML parser counts from); 0 when it cannot tell.
func (c *lineCounter) find(raw []byte) (line, rawLine int) {
	at := bytes.Index(c.data[c.search:], raw)
	if at < 0 {
		return 0, 0
	}
	start := c.search + at
	c.search = start + len(raw)
	rawLine = c.lineOf(start)
	for _, l := range bytes.SplitAfter(raw, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			break
		}
		start += len(l)
	}
	return c.lineOf(skipSpace(c.data, start)), rawLine
}

var yamlErrorLine = regexp.MustCompile(`yaml: line (\d+):`)

// inFile rewrites the line a YAML error names, counted from the document's start, as a line
// of the file (rawLine is where the document starts).
func inFile(err error, rawLine int) error {
	if rawLine <= 0 {
		return err
	}
	msg := yamlErrorLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, convErr := strconv.Atoi(yamlErrorLine.FindStringSubmatch(m)[1])
		if convErr != nil {
			return m
		}
		return fmt.Sprintf("yaml: line %d:", rawLine+n-1)
	})
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// skipSpace returns the position of the first byte at or after pos that is not space.
func skipSpace(data []byte, pos int) int {
	for pos < len(data) && (data[pos] == ' ' || data[pos] == '\t' || data[pos] == '\r' || data[pos] == '\n') {
		pos++
	}
	return pos
}

func isEmptyDocument(raw []byte) bool {
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// decode turns one document into an object. Duplicate keys are errors (as for kubectl); a
// document that is not a mapping gives nil and no error (it is skipped and counted).
func decode(raw []byte) (*unstructured.Unstructured, error) {
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(j)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, nil
	}
	m := map[string]any{}
	if err := utiljson.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// expand returns the items of a List (kind List, or any *List with items), else the object.
func expand(name string, index, line int, obj *unstructured.Unstructured, fn func(*Document)) []error {
	items, isList := obj.Object["items"].([]any)
	if !isList || !strings.HasSuffix(obj.GetKind(), "List") {
		fn(&Document{File: name, Index: index, Item: -1, Line: line, Object: obj})
		return nil
	}
	var errs []error
	for i, item := range items {
		m, ok := item.(map[string]any)
		if !ok {
			errs = append(errs, &Error{File: name, Index: index, Err: fmt.Errorf("items[%d] is not an object", i)})
			continue
		}
		fn(&Document{File: name, Index: index, Item: i, Line: line, Object: &unstructured.Unstructured{Object: m}})
	}
	return errs
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
