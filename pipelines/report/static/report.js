(function(){
  const grid=document.getElementById('grid'); if(!grid) return;
  const key=document.getElementById('sort-key'), dir=document.getElementById('sort-dir');
  function sort(){
    const k=key.value, desc=dir.value==='desc';
    const cards=Array.from(grid.querySelectorAll('.card'));
    cards.sort(function(a,b){
      if(k==='order') return (+a.dataset.order)-(+b.dataset.order);
      const attr='data-s-'+k.toLowerCase();
      const va=parseFloat(a.getAttribute(attr)), vb=parseFloat(b.getAttribute(attr));
      const na=isNaN(va), nb=isNaN(vb);
      if(na||nb) return na-nb;
      return desc? vb-va : va-vb;
    });
    cards.forEach(function(c){grid.appendChild(c);});
  }
  key.addEventListener('change',sort); dir.addEventListener('change',sort);
  grid.querySelectorAll('.card img.thumb').forEach(function(img){
    const still=img.getAttribute('src'), anim=img.dataset.preview;
    if(!anim) return;
    img.parentElement.addEventListener('mouseenter',function(){img.src=anim;});
    img.parentElement.addEventListener('mouseleave',function(){img.src=still||anim;});
  });
  window.reelforgeSort=function(k,d){key.value=k;dir.value=d;sort();};
})();
