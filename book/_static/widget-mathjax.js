// The Jupyter widgets typeset a slider's label with MathJax 2's call, MathJax.Hub.Queue(["Typeset", MathJax.Hub, el]),
// wherever window.MathJax exists. This site serves MathJax 3, whose call is MathJax.typesetPromise([el]): give it the
// old name. Until MathJax 3 is ready the call does nothing, as its first pass typesets the whole page, labels included.
(() => {
  const hub = {Queue: ([, , element]) => window.MathJax.typesetPromise && window.MathJax.typesetPromise([element])};
  const config = (window.MathJax = window.MathJax || {});
  config.Hub = hub;
  config.startup = {
    ...config.startup,
    ready() {
      window.MathJax.startup.defaultReady();
      window.MathJax.Hub = hub;
    },
  };
})();
