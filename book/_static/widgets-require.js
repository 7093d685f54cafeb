// The widgets' modules (@jupyter-widgets/base, controls, html-manager, ...) load their icon fonts from beside where
// RequireJS says the module came from, which is a folder next to each page unless told otherwise; whichever module
// draws first decides. Point RequireJS at this site's copy in _static/jupyter-widgets/, where the fonts are, for all.
const widgets = new URL("jupyter-widgets", document.currentScript.src).href;
require.config({paths: {"@jupyter-widgets/html-manager/dist": widgets, "@jupyter-widgets": widgets}});
