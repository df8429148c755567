package pvesim

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// schemaJSON is Proxmox VE's own API schema (pve-docs apidata.js) for the
// paths a container deployer uses. It is a copy of
// shared/spec/pve-api-schema.json: embedding it keeps the simulator
// self-contained and makes its rules exactly Proxmox's.
//
//go:embed pve-api-schema.json
var schemaJSON []byte

// flexBool reads Proxmox's 0/1 flags, which the schema writes as numbers.
type flexBool bool

func (b *flexBool) UnmarshalJSON(p []byte) error {
	var v any
	if err := json.Unmarshal(p, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case bool:
		*b = flexBool(x)
	case float64:
		*b = x != 0
	case string:
		*b = x == "1" || x == "true"
	}
	return nil
}

// flexNum reads limits the schema writes either as numbers or as strings.
type flexNum struct {
	set bool
	v   float64
}

func (n *flexNum) UnmarshalJSON(p []byte) error {
	var v any
	if err := json.Unmarshal(p, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case float64:
		*n = flexNum{true, x}
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return fmt.Errorf("limit %q: %w", x, err)
		}
		*n = flexNum{true, f}
	}
	return nil
}

// property is one parameter (or one key of a property string).
type property struct {
	Type       string          `json:"type"`
	Optional   flexBool        `json:"optional"`
	Enum       []string        `json:"enum"`
	Pattern    string          `json:"pattern"`
	Format     json.RawMessage `json:"format"`
	Minimum    flexNum         `json:"minimum"`
	Maximum    flexNum         `json:"maximum"`
	MinLength  *int            `json:"minLength"`
	MaxLength  *int            `json:"maxLength"`
	Requires   string          `json:"requires"`
	DefaultKey flexBool        `json:"default_key"`

	pattern    *regexp.Regexp
	formatName string
	formatKeys map[string]*property
}

// method is one HTTP method of one API path.
type method struct {
	AllowToken flexBool `json:"allowtoken"`
	Parameters struct {
		AdditionalProperties *flexBool            `json:"additionalProperties"`
		Properties           map[string]*property `json:"properties"`
	} `json:"parameters"`
	Returns json.RawMessage `json:"returns"`
}

type apiPath struct {
	template string
	segments []string
	methods  map[string]*method
}

// schema is the parsed API schema.
type schema struct {
	paths []apiPath
}

func loadSchema(data []byte) (*schema, error) {
	var doc struct {
		Paths map[string]map[string]*method `json:"paths"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse API schema: %w", err)
	}
	s := &schema{}
	for tmpl, methods := range doc.Paths {
		for name, m := range methods {
			for pname, p := range m.Parameters.Properties {
				if err := p.compile(); err != nil {
					return nil, fmt.Errorf("API schema %s %s parameter %s: %w", name, tmpl, pname, err)
				}
			}
		}
		s.paths = append(s.paths, apiPath{template: tmpl, segments: splitPath(tmpl), methods: methods})
	}
	return s, nil
}

// perlGroup turns Perl's "(?^:" (default flags) into Go's "(?:".
var perlGroup = strings.NewReplacer("(?^:", "(?:")

func (p *property) compile() error {
	if p.Pattern != "" {
		// Proxmox anchors every pattern: m/^(?:$pattern)$/.
		re, err := regexp.Compile("^(?:" + perlGroup.Replace(p.Pattern) + ")$")
		if err != nil {
			return fmt.Errorf("pattern: %w", err)
		}
		p.pattern = re
	}
	if len(p.Format) == 0 {
		return nil
	}
	if p.Format[0] == '"' {
		return json.Unmarshal(p.Format, &p.formatName)
	}
	if err := json.Unmarshal(p.Format, &p.formatKeys); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	for k, kp := range p.formatKeys {
		if err := kp.compile(); err != nil {
			return fmt.Errorf("format key %s: %w", k, err)
		}
	}
	return nil
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

// lookup finds the schema path matching the request path segments and
// returns its template, the path's variables and the methods it has.
func (s *schema) lookup(segs []string) (tmpl string, vars map[string]string, methods map[string]*method, ok bool) {
	for _, p := range s.paths {
		if len(p.segments) != len(segs) {
			continue
		}
		v := map[string]string{}
		match := true
		for i, ps := range p.segments {
			if strings.HasPrefix(ps, "{") {
				v[strings.Trim(ps, "{}")] = segs[i]
			} else if ps != segs[i] {
				match = false
				break
			}
		}
		// Literal segments win over {variables}, as in Proxmox's router.
		if match && (!ok || literalCount(p.segments) > literalCount(splitPath(tmpl))) {
			tmpl, vars, methods, ok = p.template, v, p.methods, true
		}
	}
	return tmpl, vars, methods, ok
}

func literalCount(segs []string) int {
	n := 0
	for _, s := range segs {
		if !strings.HasPrefix(s, "{") {
			n++
		}
	}
	return n
}

// Proxmox numbers its repeated options (net0, mp0, ...) up to these limits
// (pve-container's MAX_LXC_NETWORKS, MAX_MOUNT_POINTS, MAX_UNUSED_DISKS and
// MAX_DEVICES); the schema only says "[n]".
var indexedLimits = map[string]int{"net": 32, "mp": 256, "unused": 256, "dev": 256}

var indexedName = regexp.MustCompile(`^([a-z]+)(\d+)$`)

// param returns the schema of a parameter name, resolving "net0" to
// "net[n]".
func (m *method) param(name string) *property {
	if p, ok := m.Parameters.Properties[name]; ok {
		return p
	}
	sm := indexedName.FindStringSubmatch(name)
	if sm == nil {
		return nil
	}
	p, ok := m.Parameters.Properties[sm[1]+"[n]"]
	if !ok {
		return nil
	}
	if n, err := strconv.Atoi(sm[2]); err != nil || n >= indexedLimits[sm[1]] || (len(sm[2]) > 1 && sm[2][0] == '0') {
		return nil
	}
	return p
}

// validate checks params as Proxmox's JSONSchema validator does and returns
// the errors by parameter name, with Proxmox's wording.
func (m *method) validate(params map[string]string) map[string]string {
	errs := map[string]string{}
	additional := m.Parameters.AdditionalProperties == nil || bool(*m.Parameters.AdditionalProperties)
	for name, v := range params {
		p := m.param(name)
		if p == nil {
			if !additional {
				errs[name] = "property is not defined in schema and the schema does not allow additional properties"
			}
			continue
		}
		if msg := p.check(name, v); msg != "" {
			errs[name] = msg
			continue
		}
		if p.Requires != "" {
			if _, ok := params[p.Requires]; !ok {
				errs[p.Requires] = fmt.Sprintf("parameter is missing and it is required by '%s'", name)
			}
		}
	}
	for name, p := range m.Parameters.Properties {
		if bool(p.Optional) || strings.HasSuffix(name, "[n]") {
			continue
		}
		if _, ok := params[name]; !ok {
			errs[name] = "property is missing and it is not optional"
		}
	}
	return errs
}

var (
	integerRE = regexp.MustCompile(`^[+-]?\d+$`)
	numberRE  = regexp.MustCompile(`^[+-]?(\d+\.\d*|\d*\.\d+|\d+)([eE][+-]?\d+)?$`)
	booleanRE = regexp.MustCompile(`(?i)^(1|0|true|false|yes|no|on|off)$`)
)

// check validates one value; name is used in messages about property
// string keys. It returns "" when the value is valid.
func (p *property) check(name, v string) string {
	switch p.Type {
	case "integer", "number":
		re := integerRE
		if p.Type == "number" {
			re = numberRE
		}
		if !re.MatchString(v) {
			return fmt.Sprintf("type check ('%s') failed - got '%s'", p.Type, v)
		}
		f, _ := strconv.ParseFloat(v, 64)
		if p.Minimum.set && f < p.Minimum.v {
			return "value must have a minimum value of " + fmtNum(p.Minimum.v)
		}
		if p.Maximum.set && f > p.Maximum.v {
			return "value must have a maximum value of " + fmtNum(p.Maximum.v)
		}
	case "boolean":
		if !booleanRE.MatchString(v) {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", v)
		}
	case "string":
		if p.MaxLength != nil && len(v) > *p.MaxLength {
			return fmt.Sprintf("value may only be %d characters long", *p.MaxLength)
		}
		if p.MinLength != nil && len(v) < *p.MinLength {
			return fmt.Sprintf("value must be at least %d characters long", *p.MinLength)
		}
	}
	if len(p.Enum) > 0 && !contains(p.Enum, v) {
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", v, strings.Join(p.Enum, ", "))
	}
	if p.pattern != nil && !p.pattern.MatchString(v) {
		return "value does not match the regex pattern"
	}
	if p.formatName != "" {
		check, ok := formats[p.formatName]
		if !ok {
			return fmt.Sprintf("the simulator cannot check format '%s'", p.formatName)
		}
		if err := check(v); err != nil {
			return "invalid format - " + err.Error()
		}
	}
	if p.formatKeys != nil {
		if _, err := parsePropertyString(name, v, p.formatKeys); err != nil {
			return "invalid format - format error\n" + err.Error()
		}
	}
	return ""
}

func fmtNum(f float64) string {
	if f == math.Trunc(f) {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// parsePropertyString parses "k=v,k=v" (with an optional leading value for
// the format's default key) and checks every key, like Proxmox's
// parse_property_string.
func parsePropertyString(name, s string, keys map[string]*property) (map[string]string, error) {
	defaultKey := ""
	for k, kp := range keys {
		if kp.DefaultKey {
			defaultKey = k
		}
	}
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		k, v, found := strings.Cut(part, "=")
		if !found {
			if defaultKey == "" {
				return nil, fmt.Errorf("%s: value without key, but schema does not define a default key", name)
			}
			k, v = defaultKey, part
		}
		kp, ok := keys[k]
		if !ok {
			return nil, fmt.Errorf("%s.%s: property is not defined in schema and the schema does not allow additional properties", name, k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s.%s: duplicate key in comma-separated list property", name, k)
		}
		if msg := kp.check(name+"."+k, v); msg != "" {
			return nil, fmt.Errorf("%s.%s: %s", name, k, msg)
		}
		out[k] = v
	}
	for k, kp := range keys {
		if _, ok := out[k]; !ok && !bool(kp.Optional) {
			return nil, fmt.Errorf("%s.%s: property is missing and it is not optional", name, k)
		}
	}
	return out, nil
}
