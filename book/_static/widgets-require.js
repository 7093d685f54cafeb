// The widgets' HTML manager loads its icon fonts from beside the module RequireJS says it came from, which is a
// folder next to each page unless told otherwise: point RequireJS at this site's copy in _static/jupyter-widgets/.
require.config({
  paths: {"@jupyter-widgets/html-manager/dist": new URL("jupyter-widgets", document.currentScript.src).href},
});
