// lookalike storefront: progressive enhancement only. Every page works without this file.
"use strict";

// Catalogue filters: apply as soon as a select changes.
for (const form of document.querySelectorAll("form[data-autosubmit]")) {
  for (const select of form.querySelectorAll("select")) {
    select.addEventListener("change", () => form.requestSubmit());
  }
}

// Similar-products carousel: previous/next buttons (the list itself scrolls with arrow keys when focused).
for (const section of document.querySelectorAll(".similar")) {
  const list = section.querySelector(".carousel");
  const controls = section.querySelector(".carousel-controls");
  if (!list || !controls) continue;
  const step = () => Math.max(list.clientWidth * 0.8, 170);
  controls.querySelector(".carousel-prev").addEventListener("click", () => list.scrollBy({ left: -step() }));
  controls.querySelector(".carousel-next").addEventListener("click", () => list.scrollBy({ left: step() }));
  if (list.scrollWidth > list.clientWidth + 4) controls.hidden = false;
}

// Similar-products carousel: report what the shopper saw and clicked (POST /api/events), which re-ranks the
// lists by clicks. A card half in view counts as one impression per page view; impressions go in batches, a
// click at once. sendBeacon survives the navigation the click starts; its body is sent as text/plain because
// a JSON content type is not CORS-safelisted, and the API reads the body as JSON whatever its type.
for (const list of document.querySelectorAll(".similar ul[data-source]")) {
  const source = list.dataset.source;
  const event = (type, li) => ({
    type, product_id: li.dataset.product, source_product_id: source, position: Number(li.dataset.position),
  });
  let pending = [];
  let timer = null;
  const flush = () => {
    clearTimeout(timer);
    timer = null;
    if (!pending.length) return;
    const body = JSON.stringify(pending);
    pending = [];
    if (!(navigator.sendBeacon && navigator.sendBeacon("/api/events", body))) {
      fetch("/api/events", { method: "POST", body, keepalive: true }).catch(() => {});
    }
  };
  if ("IntersectionObserver" in window) {
    const seen = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        seen.unobserve(entry.target);
        pending.push(event("impression", entry.target));
        timer = timer || setTimeout(flush, 1000);
      }
    }, { threshold: 0.5 });
    for (const li of list.querySelectorAll("li[data-product]")) seen.observe(li);
  }
  list.addEventListener("click", (e) => {
    const li = e.target.closest("li[data-product]");
    if (!li) return;
    pending.push(event("click", li));
    flush();
  });
  addEventListener("pagehide", flush);
}

// Photo search: drag-and-drop onto the drop zone, preview the photo, search right away.
const form = document.getElementById("search-form");
if (form) {
  const input = form.querySelector("#image");
  const zone = form.querySelector("#dropzone");
  const preview = form.querySelector("#preview");
  const show = (file) => {
    if (!file) return;
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  };
  input.addEventListener("change", () => {
    show(input.files[0]);
    if (input.files.length) form.requestSubmit();
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("dragover"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragover"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) return;
    const dt = new DataTransfer();
    dt.items.add(files[0]);
    input.files = dt.files;
    show(files[0]);
    form.requestSubmit();
  });
}
