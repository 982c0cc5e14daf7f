package verify

// NewWithLimits is New with other bounds on the lookups running at once (in the process, per
// namespace), so that tests reach them with few requests.
func NewWithLimits(o Options, all, perNamespace int) *Verifier {
	o.lookups, o.namespaceLookups = all, perNamespace
	return New(o)
}
